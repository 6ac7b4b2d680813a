"""Compiled (numba) kernels of the deploy glue's per-frame hot paths.

The numpy functions of :mod:`.glue` are the reference implementations
(each checked against the mmcv / mmdet3d operation it replaces); these
kernels do the same work in one pass over the points / pillars / boxes, as
the board's C++ glue does, and are tested equal to them:

* :func:`voxelize_encode` -- hard voxelization (mmcv's semantics) fused with
  the pillar decoration and the rounding onto the pillar encoder's int8
  input grid, written straight into the encoder's fixed-size input;
* :func:`scatter_rows` -- pillar rows of the encoder's NHWC int8 output onto
  the NHWC int8 BEV canvas, requantized between the two subgraphs' scales;
* :func:`best_logits`, :func:`nms_rotated_sorted` -- the decoder's best
  class logit per anchor and greedy rotated NMS with mmcv's IoU arithmetic.

numba is a dependency of mmdet3d itself; kernels are compiled on first use
and cached next to this file (``cache=True``).
"""
import math

import numpy as np
from numba import njit

__all__ = ['voxelize_encode', 'scatter_rows', 'requant_table', 'best_logits',
           'best_of_rows', 'gather_rows', 'gather_anchors', 'decode_rows',
           'nms_rotated_sorted',
           'multiclass_nms', 'pair_iou', 'first_non_finite']


@njit(cache=True, inline='always')
def _pairwise_sum(a, n, size):
    """numpy's float32 pairwise sum of ``a[0:size]`` where ``a[k] == 0``
    for ``k >= n`` (padded point slots), so the mean equals numpy's
    ``sum(axis=-1)`` over the zero-padded slots bit for bit (``size`` <=
    128: one 8-accumulator block, as numpy for short rows)."""
    zero = np.float32(0.0)
    if size < 8:
        res = zero
        for i in range(size):
            res += a[i] if i < n else zero
        return res
    r0 = a[0] if 0 < n else zero
    r1 = a[1] if 1 < n else zero
    r2 = a[2] if 2 < n else zero
    r3 = a[3] if 3 < n else zero
    r4 = a[4] if 4 < n else zero
    r5 = a[5] if 5 < n else zero
    r6 = a[6] if 6 < n else zero
    r7 = a[7] if 7 < n else zero
    end = size - size % 8
    i = 8
    while i < end and i < n:
        r0 += a[i] if i < n else zero
        r1 += a[i + 1] if i + 1 < n else zero
        r2 += a[i + 2] if i + 2 < n else zero
        r3 += a[i + 3] if i + 3 < n else zero
        r4 += a[i + 4] if i + 4 < n else zero
        r5 += a[i + 5] if i + 5 < n else zero
        r6 += a[i + 6] if i + 6 < n else zero
        r7 += a[i + 7] if i + 7 < n else zero
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for k in range(end, size):
        res += a[k] if k < n else zero
    return res


@njit(cache=True, inline='always')
def _round_half_away_int8(v):
    """C ``round()`` of a float32, saturated to int8's range (as
    glue.quantize_input; the float64 sum is exact).  Saturated before
    rounding, so a huge value never reaches an integer conversion."""
    w = np.float64(v)
    if w >= 127.5:
        return 127.0
    if w <= -128.5:
        return -128.0
    return np.trunc(w + math.copysign(0.5, w))


@njit(cache=True)
def voxelize_encode(points, voxel_size, range_min, grid, max_points,
                    max_voxels, table, cell_of, point_ids, num_points,
                    prev_num_points, prev_num_voxels, coors, centre_offset,
                    with_cluster, with_centre, with_distance, enc_scale,
                    out_mul, out):
    """One frame: voxelize ``points`` and write the decorated pillars,
    rounded onto the encoder's int8 grid, into ``out``.

    Voxelization follows mmcv (``deterministic=True``): a point's voxel is
    ``floor((p - range_min) / voxel_size)`` in float32, voxels are numbered
    by their first point, a voxel keeps its first ``max_points`` points and
    voxels beyond ``max_voxels`` are dropped.  Decoration and rounding
    follow :func:`.glue.decorate_pillars` + :func:`.glue.quantize_input`:
    per valid point ``[features, xyz - mean, xyz - voxel centre, |xyz|]``
    times ``enc_scale`` (input scale x 2**fix_pos), C ``round()``, saturated
    to [-128, 127], stored times ``out_mul`` (1 for an int8 ``out``,
    2**-fix_pos for a float one).

    ``out`` is the ``(C, N, P)`` encoder input reused from frame to frame:
    the slots the previous frame filled (``prev_num_points`` of its
    ``prev_num_voxels`` voxels) and this one does not are zeroed.
    ``table`` (``int32``, one entry per grid cell) must be all -1 on entry
    and is left so; ``point_ids`` (``(max_voxels, max_points)`` int32) and
    ``cell_of`` (``>= N`` int64) are scratch.  Returns ``(num_voxels,
    num_non_empty)``, the second counting the voxels dropped by
    ``max_voxels`` too.
    """
    n_pts = points.shape[0]
    n_feat = points.shape[1]
    gx, gy, gz = grid[0], grid[1], grid[2]
    fx, fy, fz = np.float32(gx), np.float32(gy), np.float32(gz)
    num_voxels = 0
    num_total = 0
    for i in range(n_pts):
        # floor(t) in [0, g) <=> t in [0, g): test before any int cast
        tx = (points[i, 0] - range_min[0]) / voxel_size[0]
        ty = (points[i, 1] - range_min[1]) / voxel_size[1]
        tz = (points[i, 2] - range_min[2]) / voxel_size[2]
        if not (tx >= 0 and tx < fx and ty >= 0 and ty < fy and tz >= 0
                and tz < fz):
            cell_of[i] = -1
            continue
        ix, iy, iz = int(tx), int(ty), int(tz)
        key = (iz * gy + iy) * gx + ix
        cell_of[i] = key
        v = table[key]
        if v == -1:
            num_total += 1
            if num_voxels < max_voxels:
                v = num_voxels
                num_voxels += 1
                coors[v, 0] = iz
                coors[v, 1] = iy
                coors[v, 2] = ix
                num_points[v] = 0
            else:
                v = -2  # beyond max_voxels: dropped with its points
            table[key] = v
        if v >= 0 and num_points[v] < max_points:
            point_ids[v, num_points[v]] = i
            num_points[v] += 1
    for i in range(n_pts):  # leave the table all -1 for the next frame
        if cell_of[i] >= 0:
            table[cell_of[i]] = -1

    n_chan = out.shape[0]
    # slots of the previous frame that this one leaves empty
    for r in range(num_voxels, prev_num_voxels):
        for s in range(prev_num_points[r]):
            for c in range(n_chan):
                out[c, r, s] = 0
    xyz = np.empty(3, np.float32)
    mean = np.empty(3, np.float32)
    centre = np.empty(3, np.float32)
    col = np.empty(max_points, np.float32)
    for v in range(num_voxels):
        n = num_points[v]
        prev = prev_num_points[v] if v < prev_num_voxels else 0
        for s in range(n, prev):
            for c in range(n_chan):
                out[c, v, s] = 0
        ids = point_ids[v]
        if with_cluster:
            for d in range(3):
                for s in range(n):
                    col[s] = points[ids[s], d]
                mean[d] = _pairwise_sum(col, n, max_points) / np.float32(n)
        if with_centre:
            centre[0] = np.float32(coors[v, 2]) * voxel_size[0] + \
                centre_offset[0]
            centre[1] = np.float32(coors[v, 1]) * voxel_size[1] + \
                centre_offset[1]
            centre[2] = np.float32(coors[v, 0]) * voxel_size[2] + \
                centre_offset[2]
        # one point at a time, all its channels (channel planes interleave)
        for s in range(n):
            i = ids[s]
            for f in range(n_feat):
                out[f, v, s] = _round_half_away_int8(
                    points[i, f] * enc_scale[f]) * out_mul
            for d in range(3):
                xyz[d] = points[i, d]
            c = n_feat
            if with_cluster:
                for d in range(3):
                    out[c + d, v, s] = _round_half_away_int8(
                        (xyz[d] - mean[d]) * enc_scale[c + d]) * out_mul
                c += 3
            if with_centre:
                for d in range(3):
                    out[c + d, v, s] = _round_half_away_int8(
                        (xyz[d] - centre[d]) * enc_scale[c + d]) * out_mul
                c += 3
            if with_distance:
                dist = np.float32(math.sqrt(
                    (xyz[0] * xyz[0] + xyz[1] * xyz[1]) + xyz[2] * xyz[2]))
                out[c, v, s] = _round_half_away_int8(
                    dist * enc_scale[c]) * out_mul
        prev_num_points[v] = n
    return num_voxels, num_total


def requant_table(from_fix_pos: int, to_fix_pos: int) -> np.ndarray:
    """``(256,)`` int8 table: an int8 value on the grid ``2**-from_fix_pos``
    (indexed as uint8) onto the grid ``2**-to_fix_pos``, rounded as the DPU
    rounds a network input (half away from zero) and saturated -- what the
    fake-quant model does between the two subgraphs.  Zero stays zero."""
    q = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8)
    v = q.astype(np.float64) * 2.0**(int(to_fix_pos) - int(from_fix_pos))
    r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(r, -128, 127).astype(np.int8)


@njit(cache=True)
def scatter_rows(rows, coors, num, width, table, identity, canvas, written,
                 num_written, stamp, frame):
    """Scatter ``rows[:num]`` (``(N, C)`` int8, the pillar encoder's NHWC
    output) to the cells ``coors[:num]`` (``(z, y, x)``) of ``canvas``
    (``(H * W, C)`` int8, the BEV subgraph's NHWC input), each value mapped
    through ``table`` (skipped when ``identity``); a later pillar of a
    shared cell wins.

    Of the ``num_written`` cells listed in ``written`` (the previous
    call's), those this call does not write are zeroed; ``stamp`` (one
    integer per cell) marks the cells written by call ``frame`` (differing
    from the previous call's and from every stamp not written since the
    stamps were last reset), which saves touching the canvas rows a frame
    rewrites.  ``written`` then lists this call's cells.  Returns
    ``num``."""
    n_chan = canvas.shape[1]
    for k in range(num):
        cell = coors[k, 1] * width + coors[k, 2]
        stamp[cell] = frame
        if identity:
            for c in range(n_chan):
                canvas[cell, c] = rows[k, c]
        else:
            for c in range(n_chan):
                canvas[cell, c] = table[np.uint8(rows[k, c])]
    for k in range(num_written):
        cell = written[k]
        if stamp[cell] != frame:
            for c in range(n_chan):
                canvas[cell, c] = 0
    for k in range(num):
        written[k] = coors[k, 1] * width + coors[k, 2]
    return num


@njit(cache=True)
def best_logits(cls_map, num_anchors, num_classes, thr, best, above):
    """Best class logit of every anchor of a ``(A * C, H * W)`` class-logit
    map: ``best[a * H * W + cell] = max_c cls_map[a * C + c, cell]``; the
    positions whose best logit is ``> thr`` go to ``above`` in increasing
    order.  Returns ``(count, finite)``, ``finite`` False when the map
    holds NaN or inf."""
    n_cells = cls_map.shape[1]
    for a in range(num_anchors):
        base = a * num_classes
        row = best[a * n_cells:(a + 1) * n_cells]
        row[:] = cls_map[base]
        for c in range(1, num_classes):
            src = cls_map[base + c]
            for cell in range(n_cells):
                v = src[cell]
                r = row[cell]
                row[cell] = v if v > r else r
    count = 0
    for j in range(best.shape[0]):
        if best[j] > thr:
            above[count] = j
            count += 1
    # NaN / inf have all exponent bits set: an integer max tells
    exponent = np.uint32(0)
    for r in range(cls_map.shape[0]):
        bits = cls_map[r].view(np.uint32)
        for cell in range(n_cells):
            e = bits[cell] & np.uint32(0x7f800000)
            exponent = e if e > exponent else exponent
    return count, exponent != np.uint32(0x7f800000)


@njit(cache=True)
def best_of_rows(rows, thr, best, above):
    """``best[k] = max(rows[k])`` for ``(N, C)`` rows (an NHWC class map,
    one row per anchor; any real dtype); the ``k`` with ``best[k] > thr``
    go to ``above`` in increasing order.  Returns their count."""
    n, n_cls = rows.shape
    count = 0
    for k in range(n):
        m = rows[k, 0]
        for c in range(1, n_cls):
            v = rows[k, c]
            m = v if v > m else m
        best[k] = m
        if m > thr:
            above[count] = k
            count += 1
    return count


@njit(cache=True)
def gather_rows(rows, index, scale):
    """``rows[index] * scale`` as float32 (an int8 map's values)."""
    out = np.empty((index.shape[0], rows.shape[1]), np.float32)
    s = np.float32(scale)
    for k in range(index.shape[0]):
        for j in range(rows.shape[1]):
            out[k, j] = np.float32(rows[index[k], j]) * s
    return out


@njit(cache=True)
def gather_anchors(index, num_anchors, width, range_of, xs, ys, base, out):
    """Anchors ``index`` (``(y * W + x) * A + a``) from their parts: the x
    / y centres of anchor ``a``'s range (``xs[r]``, ``ys[r]``) and its
    ``(z, w, l, h, yaw, ...)`` (``base[a]``)."""
    for k in range(index.shape[0]):
        cell, a = divmod(index[k], num_anchors)
        y, x = divmod(cell, width)
        r = range_of[a]
        out[k, 0] = xs[r, x]
        out[k, 1] = ys[r, y]
        for j in range(base.shape[1]):
            out[k, 2 + j] = base[a, j]
    return out


@njit(cache=True)
def decode_rows(logits, deltas, dirs, anchors, scores, boxes, bev, dir_label):
    """The decoder's per-anchor work for the selected anchors, in float32
    like mmdet3d: sigmoid scores, ``DeltaXYZWLHRBBoxCoder.decode`` of
    ``deltas`` on ``anchors`` (``(x, y, z bottom, w, l, h, yaw[, ...])``),
    the BEV boxes ``(x, y, w, l, yaw)`` (float64) for NMS, and the
    direction label (argmax of ``dirs``, first on ties)."""
    n = logits.shape[0]
    one = np.float32(1.0)
    two = np.float32(2.0)
    for k in range(n):
        for c in range(logits.shape[1]):
            scores[k, c] = one / (one + np.exp(-logits[k, c]))
        xa, ya, za = anchors[k, 0], anchors[k, 1], anchors[k, 2]
        wa, la, ha, ra = anchors[k, 3], anchors[k, 4], anchors[k, 5], \
            anchors[k, 6]
        za = za + ha / two
        diagonal = np.sqrt(la * la + wa * wa)
        hg = np.exp(deltas[k, 5]) * ha
        boxes[k, 0] = deltas[k, 0] * diagonal + xa
        boxes[k, 1] = deltas[k, 1] * diagonal + ya
        boxes[k, 2] = (deltas[k, 2] * ha + za) - hg / two
        boxes[k, 3] = np.exp(deltas[k, 3]) * wa
        boxes[k, 4] = np.exp(deltas[k, 4]) * la
        boxes[k, 5] = hg
        boxes[k, 6] = deltas[k, 6] + ra
        for j in range(7, boxes.shape[1]):
            boxes[k, j] = deltas[k, j] + anchors[k, j]
        bev[k, 0] = boxes[k, 0]
        bev[k, 1] = boxes[k, 1]
        bev[k, 2] = boxes[k, 3]
        bev[k, 3] = boxes[k, 4]
        bev[k, 4] = boxes[k, 6]
        dir_label[k] = 1 if dirs[k, 1] > dirs[k, 0] else 0
    return n


@njit(cache=True, inline='always')
def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


@njit(cache=True)
def _corners(x, y, w, h, cos, sin, out):
    hw, hh = w / 2, h / 2
    lx = (-hw, hw, hw, -hw)
    ly = (-hh, -hh, hh, hh)
    for k in range(4):
        out[k, 0] = (lx[k] * cos - ly[k] * sin) + x
        out[k, 1] = (lx[k] * sin + ly[k] * cos) + y


@njit(cache=True)
def _clipped_edge_area(poly, clip, boundary_inside):
    """:func:`.glue._clipped_edge_area` for one pair, same arithmetic."""
    total = 0.0
    for i in range(4):
        p0x, p0y = poly[i, 0], poly[i, 1]
        dx = poly[(i + 1) % 4, 0] - p0x
        dy = poly[(i + 1) % 4, 1] - p0y
        lo = -np.inf
        hi = np.inf
        outside = False
        for k in range(4):
            qx, qy = clip[k, 0], clip[k, 1]
            ex = clip[(k + 1) % 4, 0] - qx
            ey = clip[(k + 1) % 4, 1] - qy
            a = _cross(ex, ey, p0x - qx, p0y - qy)
            b = _cross(ex, ey, dx, dy)
            if b > 0:
                t = -a / b
                lo = t if t > lo else lo
            elif b < 0:
                t = -a / b
                hi = t if t < hi else hi
            else:  # parallel
                lo = 0.0 if 0.0 > lo else lo
                hi = 1.0 if 1.0 < hi else hi
                if a < 0:
                    outside = True
                elif a == 0:
                    if boundary_inside:
                        if dx * ex + dy * ey <= 0:
                            outside = True
                    else:
                        outside = True
        lo = lo if lo > 0.0 else 0.0
        hi = hi if hi < 1.0 else 1.0
        if hi > lo and not outside:
            s0x, s0y = p0x + lo * dx, p0y + lo * dy
            s1x, s1y = p0x + hi * dx, p0y + hi * dy
            total += _cross(s0x, s0y, s1x, s1y)
    return total / 2


@njit(cache=True)
def _pair_iou_cs(a, b, cos_a, sin_a, cos_b, sin_b, ca, cb):
    sx = (a[0] + b[0]) / 2
    sy = (a[1] + b[1]) / 2
    _corners(a[0] - sx, a[1] - sy, a[2], a[3], cos_a, sin_a, ca)
    _corners(b[0] - sx, b[1] - sy, b[2], b[3], cos_b, sin_b, cb)
    inter = (_clipped_edge_area(ca, cb, True) +
             _clipped_edge_area(cb, ca, False))
    area_a = a[2] * a[3]
    area_b = b[2] * b[3]
    if inter < 0.0:
        inter = 0.0
    upper = area_a if area_a < area_b else area_b
    if inter > upper:
        inter = upper
    if area_a < 1e-14 or area_b < 1e-14:
        return 0.0
    return inter / (area_a + area_b - inter)


@njit(cache=True)
def pair_iou(a, b, ca, cb):
    """Rotated BEV IoU of ``a`` and ``b`` (``(5,)`` float64 xywhr) with
    :func:`.glue._pair_iou`'s arithmetic (``ca``, ``cb``: ``(4, 2)``
    scratch)."""
    return _pair_iou_cs(a, b, math.cos(a[4]), math.sin(a[4]),
                        math.cos(b[4]), math.sin(b[4]), ca, cb)


@njit(cache=True)
def nms_rotated_sorted(boxes, iou_thr, max_keep, keep):
    """Greedy rotated NMS of ``boxes`` (``(N, 5)`` float64 xywhr, already in
    descending score order): a kept box suppresses every later box whose
    IoU with it is ``>= iou_thr`` (mmcv's ``nms_rotated``).  Only boxes
    whose circumscribed circles meet are intersected.  Writes the kept
    positions to ``keep`` and returns how many (at most ``max_keep``)."""
    n = boxes.shape[0]
    radius = np.empty(n)
    half_x = np.empty(n)
    half_y = np.empty(n)
    area = np.empty(n)
    cos = np.empty(n)
    sin = np.empty(n)
    finite = np.empty(n, np.bool_)
    r_max = 0.0
    for i in range(n):
        radius[i] = 0.5 * math.hypot(boxes[i, 2], boxes[i, 3])
        cos[i], sin[i] = math.cos(boxes[i, 4]), math.sin(boxes[i, 4])
        c, s = abs(cos[i]), abs(sin[i])
        half_x[i] = (boxes[i, 2] * c + boxes[i, 3] * s) / 2
        half_y[i] = (boxes[i, 2] * s + boxes[i, 3] * c) / 2
        area[i] = boxes[i, 2] * boxes[i, 3]
        finite[i] = (math.isfinite(boxes[i, 0]) and math.isfinite(
            boxes[i, 1]) and math.isfinite(radius[i]) and math.isfinite(
                cos[i]) and math.isfinite(half_x[i] + half_y[i] + area[i]))
        if finite[i]:
            r_max = max(r_max, radius[i])
    # an IoU bound below this cannot reach iou_thr (margin for round-off,
    # as glue._may_reach; the exact IoU decides the rest)
    bound_thr = iou_thr * (1 - 1e-6) - 1e-12
    alive = np.ones(n, np.bool_)
    ca = np.empty((4, 2))
    cb = np.empty((4, 2))
    # Candidates of box i lie within r_i + max(r) of it along x: walk the
    # boxes sorted by x in that window only.  A box with NaN / inf (sorted
    # out of every window) suppresses nothing and is never suppressed: its
    # exact IoU would be NaN.
    xs = np.empty(n)
    for i in range(n):
        xs[i] = boxes[i, 0] if finite[i] else np.inf
    by_x = np.argsort(xs)
    xs = xs[by_x]
    size = n
    num_keep = 0
    for i in range(n):
        if i % 16 == 15:  # drop boxes done with (decided or suppressed)
            m = 0
            for t in range(size):
                j = by_x[t]
                if j > i and alive[j]:
                    by_x[m] = j
                    xs[m] = xs[t]
                    m += 1
            size = m
        if not alive[i]:
            continue
        keep[num_keep] = i
        num_keep += 1
        if num_keep >= max_keep:
            break
        if not finite[i]:
            continue
        window = (radius[i] + r_max) * (1 + 1e-6) + 1e-9
        lo = np.searchsorted(xs[:size], boxes[i, 0] - window)
        hi = np.searchsorted(xs[:size], boxes[i, 0] + window, side='right')
        for t in range(lo, hi):
            j = by_x[t]
            if j <= i or not alive[j]:
                continue
            dx = boxes[j, 0] - boxes[i, 0]
            dy = boxes[j, 1] - boxes[i, 1]
            reach = radius[j] + radius[i]
            if dx * dx + dy * dy > reach * reach * (1 + 1e-6):
                continue
            # intersection <= the axis-aligned hulls' overlap and <= the
            # smaller box
            ox = min(boxes[i, 0] + half_x[i], boxes[j, 0] + half_x[j]) - \
                max(boxes[i, 0] - half_x[i], boxes[j, 0] - half_x[j])
            oy = min(boxes[i, 1] + half_y[i], boxes[j, 1] + half_y[j]) - \
                max(boxes[i, 1] - half_y[i], boxes[j, 1] - half_y[j])
            inter = max(ox, 0.0) * max(oy, 0.0)
            inter = min(inter, min(area[i], area[j]))
            union = area[i] + area[j] - inter
            if union > 0 and inter / union < bound_thr:
                continue
            if _pair_iou_cs(boxes[i], boxes[j], cos[i], sin[i], cos[j],
                            sin[j], ca, cb) >= iou_thr:
                alive[j] = False
    return num_keep


@njit(cache=True)
def first_non_finite(points):
    """Row of the first NaN / inf value of a 2-D float array, or -1."""
    for i in range(points.shape[0]):
        for f in range(points.shape[1]):
            if not math.isfinite(points[i, f]):
                return i
    return -1


@njit(cache=True)
def multiclass_nms(boxes, scores, score_thr, iou_thr, max_keep, idx, labels):
    """mmdet3d's ``box3d_multiclass_nms`` (rotated) over shared boxes:
    for each class the boxes (``(N, 5)`` float64 xywhr) whose ``scores``
    (``(N, C)``) exceed ``score_thr``, in descending score order (stable),
    through :func:`nms_rotated_sorted` (at most ``max_keep`` each).  Writes
    the kept box indices and their labels, class after class, to ``idx`` /
    ``labels``; returns how many."""
    n, n_cls = scores.shape
    cand = np.empty(n, np.int64)
    keep = np.empty(n, np.int64)
    num = 0
    for label in range(n_cls):
        m = 0
        for i in range(n):
            if scores[i, label] > score_thr:
                cand[m] = i
                m += 1
        if m == 0:
            continue
        sc = np.empty(m, np.float32)
        for k in range(m):
            sc[k] = -scores[cand[k], label]
        order = np.argsort(sc, kind='mergesort')  # stable
        sub = np.empty((m, 5))
        for k in range(m):
            sub[k] = boxes[cand[order[k]]]
        kept = nms_rotated_sorted(sub, iou_thr, max_keep, keep)
        for k in range(kept):
            idx[num] = cand[order[keep[k]]]
            labels[num] = label
            num += 1
    return num
