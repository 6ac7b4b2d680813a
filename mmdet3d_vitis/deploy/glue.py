"""CPU glue of a deployed PointPillars-style detector, in plain numpy.

A deployed frame runs::

    check_points -> voxelize -> decorate_pillars -> [DPU subgraph 0]
    -> scatter_pillars -> [DPU subgraph 1] -> AnchorDecoder (decode + NMS)

Every function here reproduces the mmcv / mmdet3d operation it replaces
(named in its docstring) without torch, so the runtime needs neither an
mmdet3d model nor mmcv's compiled ops.  All of them are vectorised (no Python
loop over points or voxels; only greedy NMS loops over the boxes it keeps).

Bad input (wrong shapes, non-finite points, inconsistent arguments, a frame
that overflows ``max_voxels`` when asked to fail) raises a subclass of
:class:`mmdet3d_vitis.errors.UserInputError` with a one-line message;
anything else escaping these functions is a bug.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserInputError

__all__ = [
    'DeployInputError', 'PointCloudError', 'VoxelOverflowError',
    'check_points', 'voxelize', 'decorate_pillars', 'scatter_pillars',
    'rotated_iou_bev', 'nms_rotated_bev', 'AnchorDecoder'
]


class DeployInputError(UserInputError):
    """An array or argument handed to the deploy glue is unusable."""


class PointCloudError(DeployInputError):
    """The point cloud of a frame is malformed (shape, dtype, NaN/inf)."""


class VoxelOverflowError(DeployInputError):
    """A frame has more non-empty voxels than ``max_voxels`` allows."""


# ---------------------------------------------------------------------------
# small validation helpers


def _as_array(name: str, value, ndim: Optional[int] = None,
              error=DeployInputError) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise error(f'{name} is not an array: {exc}') from None
    if arr.dtype.kind not in 'iuf':
        raise error(f'{name} must be numeric, got dtype {arr.dtype}')
    if ndim is not None and arr.ndim != ndim:
        raise error(f'{name} must have {ndim} dimensions, got shape '
                    f'{tuple(arr.shape)}')
    return arr


def _float_vector(name: str, value, length: int) -> np.ndarray:
    arr = _as_array(name, value).astype(np.float64).reshape(-1)
    if arr.shape[0] != length:
        raise DeployInputError(
            f'{name} must have {length} values, got {arr.shape[0]}')
    if not np.all(np.isfinite(arr)):
        raise DeployInputError(f'{name} must be finite, got {arr.tolist()}')
    return arr


def _positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer)) or value < 1:
        raise DeployInputError(f'{name} must be a positive int, got {value!r}')
    return int(value)


def _voxel_geometry(voxel_size, point_cloud_range):
    """float32 voxel size, range minimum and grid size as mmcv computes."""
    vs = _float_vector('voxel_size', voxel_size, 3)
    pcr = _float_vector('point_cloud_range', point_cloud_range, 6)
    if np.any(vs <= 0):
        raise DeployInputError(
            f'voxel_size must be positive, got {vs.tolist()}')
    if np.any(pcr[3:] <= pcr[:3]):
        raise DeployInputError(
            'point_cloud_range must be [x_min, y_min, z_min, x_max, y_max, '
            f'z_max] with max > min, got {pcr.tolist()}')
    vs32 = vs.astype(np.float32)
    pcr32 = pcr.astype(np.float32)
    # mmcv: grid_size[i] = round((range_max - range_min) / voxel_size) in
    # float arithmetic, C round() (half away from zero).
    grid = np.floor((pcr32[3:] - pcr32[:3]) / vs32 + np.float32(0.5))
    if np.any(grid < 1):
        raise DeployInputError(
            f'voxel_size {vs.tolist()} is larger than point_cloud_range '
            f'{pcr.tolist()}: the voxel grid would be empty')
    return vs32, pcr32, grid.astype(np.int64)


# ---------------------------------------------------------------------------
# 1. points


def check_points(points, num_features: int, drop_invalid: bool = False,
                 return_num_dropped: bool = False):
    """Validate a point cloud and return it as a C-contiguous float32 array.

    Args:
        points: ``(N, F)`` array-like of numbers (x, y, z, then the other
            point features).  Any real dtype is accepted and converted to
            float32; an empty cloud (``N == 0``, also a 1-D empty array) is
            allowed and returned as ``(0, F)``.
        num_features (int): the width ``F`` the deployed model expects.
        drop_invalid (bool): by default a row holding NaN or +-inf (after
            the float32 conversion, so values beyond float32's range count
            as inf) raises :class:`PointCloudError`.  With ``True`` such rows
            are dropped instead.
        return_num_dropped (bool): also return how many rows were dropped
            (always 0 unless ``drop_invalid``).

    Returns:
        ``points`` ``(N', F)`` float32, or ``(points, num_dropped)`` when
        ``return_num_dropped`` is set.

    Raises:
        PointCloudError: not a 2-D numeric array, wrong width, or
            non-finite values (unless ``drop_invalid``).
    """
    if isinstance(num_features, (bool, np.bool_)) or not isinstance(
            num_features, (int, np.integer)) or num_features < 3:
        raise DeployInputError(
            f'num_features must be an int >= 3 (x, y, z, ...), got '
            f'{num_features!r}')
    arr = _as_array('points', points, error=PointCloudError)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, num_features)
    if arr.ndim != 2:
        raise PointCloudError(
            f'points must be a 2-D (N, {num_features}) array, got shape '
            f'{tuple(arr.shape)}')
    if arr.shape[1] != num_features:
        raise PointCloudError(
            f'points have {arr.shape[1]} features per point, the model '
            f'expects {num_features}')
    with np.errstate(over='ignore', invalid='ignore'):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    num_bad = int(arr.shape[0] - np.count_nonzero(finite))
    if num_bad:
        if not drop_invalid:
            first = int(np.argmin(finite))
            raise PointCloudError(
                f'{num_bad} of {arr.shape[0]} points have NaN or inf values '
                f'(first: row {first}); pass drop_invalid=True to drop them')
        arr = arr[finite]
    if return_num_dropped:
        return arr, num_bad
    return arr


# ---------------------------------------------------------------------------
# 2. hard voxelization


def voxelize(points, voxel_size: Sequence[float],
             point_cloud_range: Sequence[float], max_points: int,
             max_voxels: int, on_overflow: str = 'drop'
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hard voxelization, identical to mmcv's ``Voxelization`` on the CPU.

    Reproduces ``mmcv.ops.voxelization(points, voxel_size,
    point_cloud_range, max_points, max_voxels, deterministic=True)``
    element for element: a point's voxel is ``floor((p - range_min) /
    voxel_size)`` in float32 (points outside ``[0, grid)`` on any axis are
    dropped, so a point on the upper range boundary is out); voxels are
    numbered in order of their first point; a voxel keeps its first
    ``max_points`` points in point order; voxels beyond the first
    ``max_voxels`` are dropped with all their points.

    Args:
        points: ``(N, F)`` float32 points, F >= 3 (see :func:`check_points`;
            they are checked again here, NaN/inf raise).
        voxel_size: ``(vx, vy, vz)``.
        point_cloud_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)``.
        max_points (int): points kept per voxel.
        max_voxels (int): voxels kept per frame.
        on_overflow (str): ``'drop'`` (default, mmcv's behaviour) silently
            drops the voxels beyond ``max_voxels``; ``'error'`` raises
            :class:`VoxelOverflowError` when the frame has more non-empty
            voxels than ``max_voxels``.

    Returns:
        ``voxels`` ``(M, max_points, F)`` float32 (unused slots zero),
        ``num_points`` ``(M,)`` int32 and ``coors`` ``(M, 3)`` int32 as
        ``(z, y, x)`` voxel indices, ``M <= max_voxels``.
    """
    if on_overflow not in ('drop', 'error'):
        raise DeployInputError(
            f"on_overflow must be 'drop' or 'error', got {on_overflow!r}")
    max_points = _positive_int('max_points', max_points)
    max_voxels = _positive_int('max_voxels', max_voxels)
    vs, pcr, grid = _voxel_geometry(voxel_size, point_cloud_range)
    arr = _as_array('points', points, error=PointCloudError)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise PointCloudError(
            f'points must be a 2-D (N, F >= 3) array, got shape '
            f'{tuple(arr.shape)}')
    pts = check_points(arr, arr.shape[1])
    num_features = pts.shape[1]

    # Same float32 expression as mmcv's CPU kernel.
    cell = np.floor((pts[:, :3] - pcr[:3]) / vs)
    inside = np.all((cell >= 0) & (cell < grid.astype(np.float32)), axis=1)
    point_ids = np.flatnonzero(inside)
    cell = cell[point_ids].astype(np.int64)  # (x, y, z)
    key = (cell[:, 2] * grid[1] + cell[:, 1]) * grid[0] + cell[:, 0]
    _, first, inverse = np.unique(key, return_index=True,
                                  return_inverse=True)
    inverse = inverse.reshape(-1)
    num_total = first.shape[0]
    if on_overflow == 'error' and num_total > max_voxels:
        raise VoxelOverflowError(
            f'the frame has {num_total} non-empty voxels, more than '
            f'max_voxels={max_voxels}; raise max_voxels or crop the cloud '
            "(on_overflow='drop' drops the extra voxels like mmcv)")
    # Voxel ids in order of first appearance.
    appearance = np.argsort(first, kind='stable')
    rank = np.empty(num_total, dtype=np.int64)
    rank[appearance] = np.arange(num_total)
    voxel_of = rank[inverse]
    num_voxels = min(num_total, max_voxels)

    keep = voxel_of < num_voxels
    voxel_of = voxel_of[keep]
    kept_ids = point_ids[keep]
    order = np.argsort(voxel_of, kind='stable')  # point order in a voxel
    voxel_sorted = voxel_of[order]
    counts = np.bincount(voxel_sorted, minlength=num_voxels)
    starts = np.cumsum(counts) - counts
    slot = np.arange(voxel_sorted.shape[0]) - starts[voxel_sorted]
    fits = slot < max_points

    voxels = np.zeros((num_voxels, max_points, num_features), np.float32)
    voxels[voxel_sorted[fits], slot[fits]] = pts[kept_ids[order[fits]]]
    num_points = np.minimum(counts, max_points).astype(np.int32)
    coors = cell[first[appearance[:num_voxels]]][:, ::-1]
    return voxels, num_points, np.ascontiguousarray(coors, dtype=np.int32)


# ---------------------------------------------------------------------------
# 3. pillar decoration


def decorate_pillars(voxels, num_points, coors, voxel_size: Sequence[float],
                     point_cloud_range: Sequence[float],
                     with_cluster_center: bool = True,
                     with_voxel_center: bool = True,
                     with_distance: bool = False,
                     input_scale=None) -> np.ndarray:
    """PillarFeatureNet's point decoration as the pillar encoder's input.

    Equal to mmdet3d's ``PillarFeatureNet`` (``legacy=False``) feature
    decoration and to :class:`mmdet3d_vitis.quantization.partition.
    PointDecoration`: per point ``[point features, xyz - mean xyz of the
    voxel's valid points, xyz - voxel centre, |xyz|]`` (the last three groups
    as enabled), the voxel centre being ``coors * voxel_size + voxel_size /
    2 + range_min``; padded point slots are zeroed, then every channel is
    multiplied by ``input_scale`` (the partition's per-channel input
    normalisation) when given.

    Args:
        voxels: ``(M, P, F)`` from :func:`voxelize`.
        num_points: ``(M,)`` valid points per voxel, each in ``1..P``.
        coors: ``(M, 3)`` ``(z, y, x)`` voxel indices.
        voxel_size, point_cloud_range: as for :func:`voxelize`.
        input_scale: optional ``(C,)`` per-channel factors.

    Returns:
        ``(1, C, M, P)`` float32, ``C = F + 3 * with_cluster_center + 3 *
        with_voxel_center + with_distance``.
    """
    vox = _as_array('voxels', voxels, ndim=3)
    num_voxels, max_points, num_features = vox.shape
    if num_features < 3:
        raise DeployInputError(
            f'voxels must carry at least x, y, z, got {num_features} '
            'features')
    npts = _as_array('num_points', num_points, ndim=1)
    crs = _as_array('coors', coors, ndim=2)
    if npts.shape[0] != num_voxels or crs.shape != (num_voxels, 3):
        raise DeployInputError(
            f'voxels {tuple(vox.shape)}, num_points {tuple(npts.shape)} and '
            f'coors {tuple(crs.shape)} disagree: expected ({num_voxels},) '
            f'and ({num_voxels}, 3)')
    if npts.dtype.kind not in 'iu' or crs.dtype.kind not in 'iu':
        raise DeployInputError('num_points and coors must be integers')
    if num_voxels and (npts.min() < 1 or npts.max() > max_points):
        raise DeployInputError(
            f'num_points must lie in 1..{max_points}, got '
            f'{int(npts.min())}..{int(npts.max())}')
    vs = _float_vector('voxel_size', voxel_size, 3)
    pcr = _float_vector('point_cloud_range', point_cloud_range, 6)
    channels = (num_features + 3 * bool(with_cluster_center) +
                3 * bool(with_voxel_center) + bool(with_distance))
    scale = None
    if input_scale is not None:
        scale = _as_array('input_scale', input_scale).astype(
            np.float32).reshape(-1)
        if scale.shape[0] != channels:
            raise DeployInputError(
                f'input_scale has {scale.shape[0]} values, the decorated '
                f'features have {channels} channels')
    # Written straight into the (C, M, P) output, channel block by block.
    out = np.empty((1, channels, num_voxels, max_points), np.float32)
    dst = out[0]
    dst[:num_features] = np.asarray(vox, np.float32).transpose(2, 0, 1)
    xyz = dst[:3]  # (3, M, P)
    ch = num_features
    if with_cluster_center:
        # padded slots are zero, so the sum over all slots is the sum over
        # the valid points (as in the encoder)
        mean = xyz.sum(axis=2) / npts.astype(np.float32)
        np.subtract(xyz, mean[:, :, None], out=dst[ch:ch + 3])
        ch += 3
    if with_voxel_center:
        size32 = vs.astype(np.float32)
        offset32 = (vs / 2 + pcr[:3]).astype(np.float32)
        centre = (crs[:, ::-1].astype(np.float32) * size32 + offset32).T
        np.subtract(xyz, centre[:, :, None], out=dst[ch:ch + 3])
        ch += 3
    if with_distance:
        np.sqrt((xyz * xyz).sum(axis=0), out=dst[ch])
    valid = np.arange(max_points, dtype=npts.dtype)[None, :] < npts[:, None]
    dst *= valid.astype(np.float32)
    if scale is not None:
        dst *= scale[:, None, None]
    return out


# ---------------------------------------------------------------------------
# 4. scatter


def scatter_pillars(features, coors, grid_hw: Sequence[int]) -> np.ndarray:
    """Scatter pillar features onto the BEV canvas like PointPillarsScatter.

    ``canvas[:, y * W + x] = features.T``; when two pillars share a cell the
    later one wins (what torch's indexing does on the CPU; here it is
    guaranteed).

    Args:
        features: ``(M, C)`` pillar features, or the pillar encoder's
            ``(1, C, M, 1)`` output.
        coors: ``(M, 3)`` ``(z, y, x)`` voxel indices (z ignored).
        grid_hw: ``(H, W)`` of the canvas (mmdet3d's ``output_shape``).

    Returns:
        ``(1, C, H, W)`` float32, zero where there is no pillar.
    """
    feats = _as_array('features', features)
    if feats.ndim == 4:
        if feats.shape[0] != 1 or feats.shape[3] != 1:
            raise DeployInputError(
                'features must be (M, C) or the (1, C, M, 1) pillar encoder '
                f'output, got shape {tuple(feats.shape)}')
        feats = feats[0, :, :, 0].T
    elif feats.ndim != 2:
        raise DeployInputError(
            f'features must be (M, C) or (1, C, M, 1), got shape '
            f'{tuple(feats.shape)}')
    crs = _as_array('coors', coors, ndim=2)
    if crs.shape != (feats.shape[0], 3) or crs.dtype.kind not in 'iu':
        raise DeployInputError(
            f'coors must be ({feats.shape[0]}, 3) integers (z, y, x), got '
            f'{tuple(crs.shape)} {crs.dtype}')
    hw = [_positive_int('grid_hw', v) for v in np.asarray(grid_hw).tolist()] \
        if np.ndim(grid_hw) == 1 and len(grid_hw) == 2 else None
    if hw is None:
        raise DeployInputError(f'grid_hw must be (H, W), got {grid_hw!r}')
    height, width = hw
    ys = crs[:, 1].astype(np.int64)
    xs = crs[:, 2].astype(np.int64)
    if ys.size and (ys.min() < 0 or ys.max() >= height or xs.min() < 0
                    or xs.max() >= width):
        raise DeployInputError(
            f'coors fall outside the {height} x {width} grid: y in '
            f'{int(ys.min())}..{int(ys.max())}, x in '
            f'{int(xs.min())}..{int(xs.max())}')
    index = ys * width + xs
    rows = feats
    if index.size and np.bincount(index).max() > 1:
        # keep the last pillar of each cell
        _, last = np.unique(index[::-1], return_index=True)
        last = index.shape[0] - 1 - last
        index, rows = index[last], feats[last]
    canvas = np.zeros((feats.shape[1], height * width), np.float32)
    canvas[:, index] = rows.T
    return canvas.reshape(1, feats.shape[1], height, width)


# ---------------------------------------------------------------------------
# 5. rotated BEV IoU / NMS


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(K, 5) xywhr -> (K, 4, 2) corners, counter-clockwise (mmcv's)."""
    cos, sin = np.cos(boxes[:, 4]), np.sin(boxes[:, 4])
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    local = np.stack([
        np.stack([-half_w, -half_h], -1),
        np.stack([half_w, -half_h], -1),
        np.stack([half_w, half_h], -1),
        np.stack([-half_w, half_h], -1)
    ], axis=1)  # (K, 4, 2)
    x = local[..., 0] * cos[:, None] - local[..., 1] * sin[:, None]
    y = local[..., 0] * sin[:, None] + local[..., 1] * cos[:, None]
    return np.stack([x + boxes[:, None, 0], y + boxes[:, None, 1]], -1)


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _clipped_edge_area(poly: np.ndarray, clip: np.ndarray,
                       boundary_inside: bool) -> np.ndarray:
    """Green's-theorem share of ``poly``'s edges that lie inside ``clip``.

    Both ``(K, 4, 2)`` convex and counter-clockwise.  The intersection area
    of two convex polygons is the sum of this term for (A in B) and (B in
    A); an edge lying on the other polygon's boundary counts on one side
    only (``boundary_inside`` and same direction), so identical and
    touching boxes come out right.
    """
    p0 = poly[:, :, None, :]  # (K, 4, 1, 2) edge starts
    d = (np.roll(poly, -1, axis=1) - poly)[:, :, None, :]
    q = clip[:, None, :, :]  # (K, 1, 4, 2)
    e = (np.roll(clip, -1, axis=1) - clip)[:, None, :, :]
    a = _cross(e, p0 - q)  # (K, 4, 4): inside  <=> a + t * b >= 0
    b = _cross(e, d)
    with np.errstate(divide='ignore', invalid='ignore'):
        t = -a / b
    lo = np.where(b > 0, t, 0.0).max(axis=2)
    hi = np.where(b < 0, t, 1.0).min(axis=2)
    lo = np.maximum(lo, 0.0)
    hi = np.minimum(hi, 1.0)
    parallel = b == 0
    outside = parallel & (a < 0)
    collinear = parallel & (a == 0)
    if boundary_inside:
        outside |= collinear & ((d * e).sum(-1) <= 0)
    else:
        outside |= collinear
    valid = (hi > lo) & ~outside.any(axis=2)
    d0 = d[:, :, 0, :]
    s0 = poly + lo[..., None] * d0
    s1 = poly + hi[..., None] * d0
    return np.where(valid, _cross(s0, s1), 0.0).sum(axis=1) / 2


def rotated_iou_bev(box, boxes) -> np.ndarray:
    """IoU of one rotated BEV box with many, like mmcv's ``box_iou_rotated``.

    Args:
        box: ``(5,)`` ``(x, y, w, h, angle)``, angle in radians,
            counter-clockwise (mmcv's ``nms_rotated`` default,
            ``clockwise=True`` in its naming, which is what mmdet3d uses).
        boxes: ``(K, 5)`` likewise.

    Returns:
        ``(K,)`` float64 IoU (0 for a box of (near) zero area, as mmcv).
    """
    ref = np.asarray(box, np.float64).reshape(1, 5)
    others = np.asarray(boxes, np.float64).reshape(-1, 5)
    if others.shape[0] == 0:
        return np.zeros(0)
    # shift both to their mid-point, as mmcv does, for precision
    shift = (ref[:, :2] + others[:, :2]) / 2
    a = ref.repeat(others.shape[0], 0)
    a[:, :2] -= shift
    b = others.copy()
    b[:, :2] -= shift
    ca, cb = _corners(a), _corners(b)
    inter = (_clipped_edge_area(ca, cb, True) +
             _clipped_edge_area(cb, ca, False))
    area_a = a[:, 2] * a[:, 3]
    area_b = b[:, 2] * b[:, 3]
    inter = np.clip(inter, 0.0, np.minimum(area_a, area_b))
    union = area_a + area_b - inter
    degenerate = (area_a < 1e-14) | (area_b < 1e-14)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(degenerate, 0.0, inter / union)
    return iou


def nms_rotated_bev(boxes, scores, iou_thr: float) -> np.ndarray:
    """Greedy rotated NMS, the semantics of mmcv's ``nms_rotated``.

    Boxes are visited in descending score order; a box suppresses every
    later box whose IoU with it is ``>= iou_thr``.  Only pairs whose
    circumscribed circles meet are intersected.

    Args:
        boxes: ``(N, 5)`` ``(x, y, w, h, angle)``.
        scores: ``(N,)``.
        iou_thr (float): IoU threshold.

    Returns:
        int64 indices into ``boxes`` of the kept boxes, highest score first.
    """
    bx = np.asarray(boxes, np.float64).reshape(-1, 5)
    sc = np.asarray(scores).reshape(-1)
    if sc.shape[0] != bx.shape[0]:
        raise DeployInputError(
            f'{bx.shape[0]} boxes but {sc.shape[0]} scores')
    order = np.argsort(-sc, kind='stable')
    bx = bx[order]
    n = bx.shape[0]
    radius = 0.5 * np.hypot(bx[:, 2], bx[:, 3])
    alive = np.ones(n, dtype=bool)
    keep = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if rest.size == 0:
            break
        dist2 = ((bx[rest, :2] - bx[i, :2])**2).sum(axis=1)
        near = rest[dist2 <= (radius[rest] + radius[i])**2 * (1 + 1e-6)]
        if near.size:
            iou = rotated_iou_bev(bx[i], bx[near])
            alive[near[iou >= iou_thr]] = False
    return order[np.asarray(keep, dtype=np.int64)]


# ---------------------------------------------------------------------------
# 6. anchors, box decoding and multi-class NMS


def _limit_period(val, offset, period):
    return val - np.floor(val / period + offset) * period


class AnchorDecoder:
    """Anchor3DHead's ``predict_by_feat`` for one frame, in numpy.

    Anchors follow mmdet3d's ``AlignedAnchor3DRangeGenerator`` (one feature
    level, ``size_per_range``; ``custom_values`` become zero columns, as in
    mmdet3d, which never writes the configured values), boxes are decoded
    like ``DeltaXYZWLHRBBoxCoder`` (code size 7 or 9), scores are sigmoids,
    the top ``nms_pre`` anchors by best class score are decoded, then for
    every class the boxes with score ``> score_thr`` go through rotated BEV
    NMS (``box3d_multiclass_nms`` with ``use_rotate_nms=True``), at most
    ``max_num`` boxes are kept by score, and the yaw gets the direction
    classifier's fix ``limit_period(yaw - dir_offset, dir_limit_offset, pi)
    + dir_offset + pi * dir_label``.

    Call it with one frame's head maps (``(A * num_classes, H, W)``,
    ``(A * code_size, H, W)``, ``(A * 2, H, W)``, a leading batch axis of 1
    allowed); it returns ``dict(bboxes=(K, code_size) float32,
    scores=(K,) float32, labels=(K,) int64)`` in LiDAR box layout
    ``(x, y, z, dx, dy, dz, yaw[, vx, vy])`` with z at the bottom centre.
    """

    def __init__(self, num_classes: int, ranges, sizes,
                 rotations=(0, 1.5707963), custom_values=(),
                 box_code_size: int = 7, align_corner: bool = False,
                 size_per_range: bool = True, scale: float = 1,
                 dir_offset: float = -np.pi / 2, dir_limit_offset: float = 0,
                 nms_pre: int = -1, score_thr: float = 0.0,
                 nms_thr: float = 0.2, max_num: int = 500):
        self.num_classes = _positive_int('num_classes', num_classes)
        rng = _as_array('ranges', ranges).astype(np.float64).reshape(-1, 6)
        size = [
            _as_array('sizes', s).astype(np.float64).reshape(-1, 3)
            for s in (sizes if size_per_range else [sizes])
        ]
        if size_per_range:
            if len(size) != rng.shape[0]:
                if rng.shape[0] != 1:
                    raise DeployInputError(
                        f'{rng.shape[0]} anchor ranges but {len(size)} '
                        'sizes; with size_per_range they must match')
                rng = rng.repeat(len(size), 0)
        else:
            rng = rng[:1]
        self.ranges = rng
        self.sizes = [s * scale for s in size]
        self.rotations = np.asarray(rotations, np.float64).reshape(-1)
        self.box_code_size = int(box_code_size)
        if self.box_code_size not in (7, 9):
            raise DeployInputError(
                f'box_code_size must be 7 or 9, got {box_code_size}')
        if len(custom_values) != self.box_code_size - 7:
            raise DeployInputError(
                f'{len(custom_values)} custom_values for a box code of '
                f'size {self.box_code_size}')
        self.align_corner = bool(align_corner)
        self.dir_offset = float(dir_offset)
        self.dir_limit_offset = float(dir_limit_offset)
        self.nms_pre = int(nms_pre)
        self.score_thr = float(score_thr)
        self.nms_thr = float(nms_thr)
        self.max_num = int(max_num)
        self.num_anchors = sum(s.shape[0] for s in self.sizes) * len(
            self.rotations)
        self._anchor_cache: Dict[Tuple[int, int], np.ndarray] = {}

    @classmethod
    def from_config(cls, head_cfg: dict, test_cfg: dict) -> 'AnchorDecoder':
        """Build from an ``Anchor3DHead`` config and its test config.

        ``head_cfg`` is e.g. ``cfg.model.pts_bbox_head`` and ``test_cfg``
        ``cfg.model.test_cfg.pts`` (or ``cfg.model.test_cfg`` for VoxelNet).
        """
        head = dict(head_cfg)
        test = dict(test_cfg)
        if head.get('type', 'Anchor3DHead') != 'Anchor3DHead':
            raise DeployInputError(
                f"AnchorDecoder handles Anchor3DHead, not {head['type']}")
        gen = dict(head.get('anchor_generator', {}))
        if gen.get('type') != 'AlignedAnchor3DRangeGenerator':
            raise DeployInputError(
                'AnchorDecoder handles AlignedAnchor3DRangeGenerator, not '
                f"{gen.get('type')}")
        if len(gen.get('scales', [1])) != 1:
            raise DeployInputError('multi-level anchors are not supported')
        loss_cls = dict(head.get('loss_cls', {}))
        if not loss_cls.get('use_sigmoid', True):
            raise DeployInputError('only sigmoid classification is supported')
        if not head.get('use_direction_classifier', True):
            raise DeployInputError(
                'Anchor3DHead.predict_by_feat needs the direction classifier')
        if not test.get('use_rotate_nms', True):
            raise DeployInputError('only use_rotate_nms=True is supported')
        coder = dict(head.get('bbox_coder', {}))
        return cls(
            num_classes=head['num_classes'],
            ranges=gen['ranges'],
            sizes=gen.get('sizes', [[3.9, 1.6, 1.56]]),
            rotations=gen.get('rotations', [0, 1.5707963]),
            custom_values=gen.get('custom_values', ()),
            box_code_size=coder.get('code_size', 7),
            align_corner=gen.get('align_corner', False),
            size_per_range=gen.get('size_per_range', True),
            scale=gen.get('scales', [1])[0],
            dir_offset=head.get('dir_offset', -np.pi / 2),
            dir_limit_offset=head.get('dir_limit_offset', 0),
            nms_pre=test.get('nms_pre', -1),
            score_thr=test.get('score_thr', 0),
            nms_thr=test['nms_thr'],
            max_num=test['max_num'])

    def anchors(self, featmap_hw: Tuple[int, int]) -> np.ndarray:
        """``(H * W * A, code_size)`` float32 anchors, order (y, x, a)."""
        height, width = (int(v) for v in featmap_hw)
        key = (height, width)
        if key in self._anchor_cache:
            return self._anchor_cache[key]
        per_range = []
        n_rot = len(self.rotations)
        for rng, size in zip(self.ranges, self.sizes):
            zs = np.linspace(rng[2], rng[5], 2)
            ys = np.linspace(rng[1], rng[4], height + 1)
            xs = np.linspace(rng[0], rng[3], width + 1)
            if not self.align_corner:
                zs = zs + (zs[1] - zs[0]) / 2
                ys = ys + (ys[1] - ys[0]) / 2
                xs = xs + (xs[1] - xs[0]) / 2
            n_size = size.shape[0]
            a = np.empty((height, width, n_size, n_rot, 7))
            a[..., 0] = xs[None, :width, None, None]
            a[..., 1] = ys[:height, None, None, None]
            a[..., 2] = zs[0]
            a[..., 3:6] = size[None, None, :, None, :]
            a[..., 6] = self.rotations[None, None, None, :]
            per_range.append(a)
        anchors = np.concatenate(per_range, axis=2).reshape(-1, 7)
        if self.box_code_size > 7:
            anchors = np.concatenate(
                [anchors,
                 np.zeros((anchors.shape[0], self.box_code_size - 7))], 1)
        anchors = anchors.astype(np.float32)
        self._anchor_cache[key] = anchors
        return anchors

    def decode_boxes(self, anchors: np.ndarray,
                     deltas: np.ndarray) -> np.ndarray:
        """``DeltaXYZWLHRBBoxCoder.decode`` in float32."""
        xa, ya, za, wa, la, ha, ra = anchors[:, :7].T
        xt, yt, zt, wt, lt, ht, rt = deltas[:, :7].T
        za = za + ha / 2
        diagonal = np.sqrt(la**2 + wa**2)
        xg = xt * diagonal + xa
        yg = yt * diagonal + ya
        zg = zt * ha + za
        lg = np.exp(lt) * la
        wg = np.exp(wt) * wa
        hg = np.exp(ht) * ha
        rg = rt + ra
        zg = zg - hg / 2
        out = [xg, yg, zg, wg, lg, hg, rg]
        out += [deltas[:, k] + anchors[:, k]
                for k in range(7, self.box_code_size)]
        return np.stack(out, axis=1).astype(np.float32)

    def _map(self, name, value, per_anchor):
        arr = _as_array(name, value)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3 or arr.shape[0] != self.num_anchors * per_anchor:
            raise DeployInputError(
                f'{name} must be ({self.num_anchors * per_anchor}, H, W) '
                f'(num_anchors {self.num_anchors} x {per_anchor}), got shape '
                f'{tuple(np.shape(value))}')
        arr = np.asarray(arr, np.float32)
        if not np.isfinite(arr).all():
            raise DeployInputError(
                f'{name} holds NaN or inf values (a corrupt subgraph output?)')
        return arr

    def __call__(self, cls_score, bbox_pred, dir_cls_pred
                 ) -> Dict[str, np.ndarray]:
        cls_map = self._map('cls_score', cls_score, self.num_classes)
        box_map = self._map('bbox_pred', bbox_pred, self.box_code_size)
        dir_map = self._map('dir_cls_pred', dir_cls_pred, 2)
        hw = cls_map.shape[1:]
        if box_map.shape[1:] != hw or dir_map.shape[1:] != hw:
            raise DeployInputError(
                f'head maps disagree on H x W: {cls_map.shape[1:]}, '
                f'{box_map.shape[1:]}, {dir_map.shape[1:]}')
        anchors = self.anchors(hw)
        logits = cls_map.transpose(1, 2, 0).reshape(-1, self.num_classes)
        with np.errstate(over='ignore'):
            scores = (1 / (1 + np.exp(-logits))).astype(np.float32)
        deltas = box_map.transpose(1, 2, 0).reshape(-1, self.box_code_size)
        dir_label = dir_map.transpose(1, 2, 0).reshape(-1, 2).argmax(axis=1)
        if 0 < self.nms_pre < scores.shape[0]:
            best = scores.max(axis=1)
            top = np.argpartition(-best, self.nms_pre - 1)[:self.nms_pre]
            top = top[np.argsort(-best[top], kind='stable')]
            anchors, deltas = anchors[top], deltas[top]
            scores, dir_label = scores[top], dir_label[top]
        boxes = self.decode_boxes(anchors, deltas)
        bev = boxes[:, [0, 1, 3, 4, 6]]
        keep_idx, keep_label = [], []
        for label in range(self.num_classes):
            cand = np.flatnonzero(scores[:, label] > self.score_thr)
            if cand.size == 0:
                continue
            kept = cand[nms_rotated_bev(bev[cand], scores[cand, label],
                                        self.nms_thr)]
            keep_idx.append(kept)
            keep_label.append(np.full(kept.shape[0], label, np.int64))
        if keep_idx:
            idx = np.concatenate(keep_idx)
            labels = np.concatenate(keep_label)
        else:
            idx = np.zeros(0, np.int64)
            labels = np.zeros(0, np.int64)
        out_scores = scores[idx, labels]
        if idx.shape[0] > self.max_num:
            best = np.argsort(-out_scores, kind='stable')[:self.max_num]
            idx, labels, out_scores = idx[best], labels[best], out_scores[best]
        out_boxes = boxes[idx].copy()
        if out_boxes.shape[0]:
            yaw = out_boxes[:, 6]
            dir_rot = _limit_period(yaw - np.float32(self.dir_offset),
                                    np.float32(self.dir_limit_offset),
                                    np.float32(np.pi))
            out_boxes[:, 6] = (dir_rot + np.float32(self.dir_offset) +
                               np.float32(np.pi) *
                               dir_label[idx].astype(np.float32))
        return dict(bboxes=out_boxes, scores=out_scores, labels=labels)
