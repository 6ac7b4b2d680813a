"""CPU glue of a deployed PointPillars-style detector: the numpy reference.

A deployed frame runs::

    check_points -> voxelize -> decorate_pillars -> [DPU subgraph 0]
    -> scatter_pillars -> [DPU subgraph 1] -> AnchorDecoder (decode + NMS)

Every function here reproduces the mmcv / mmdet3d operation it replaces
(named in its docstring) without torch, so the runtime needs neither an
mmdet3d model nor mmcv's compiled ops.  They are vectorised numpy and serve
as the reference implementations: :class:`~.pipeline.Pipeline` runs the
compiled kernels of :mod:`.kernels` (one pass over the points / pillars /
boxes each), which are tested equal to these.  :class:`AnchorDecoder`
itself calls the kernels for its best-logit, box decoding and NMS steps.

Bad input (wrong shapes, non-finite points, inconsistent arguments, a frame
that overflows ``max_voxels`` when asked to fail) raises a subclass of
:class:`mmdet3d_vitis.errors.UserInputError` with a one-line message;
anything else escaping these functions is a bug.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserInputError
from . import kernels

__all__ = [
    'DeployInputError', 'PointCloudError', 'VoxelOverflowError',
    'check_points', 'voxelize', 'decorate_pillars', 'quantize_input',
    'scatter_pillars',
    'ScatterCanvas', 'rotated_iou_bev', 'nms_rotated_bev', 'AnchorDecoder'
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
    # a row sum is finite unless the row holds NaN/inf (or overflows):
    # the exact test runs only on the rows it flags
    finite = np.isfinite(arr.sum(axis=1))
    if not finite.all():
        suspect = np.flatnonzero(~finite)
        finite[suspect] = np.isfinite(arr[suspect]).all(axis=1)
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

# grids up to this many cells are voxelized with a dense per-cell table
_DENSE_CELLS = 1 << 22


def voxelize(points, voxel_size: Sequence[float],
             point_cloud_range: Sequence[float], max_points: int,
             max_voxels: int, on_overflow: str = 'drop',
             out: Optional[np.ndarray] = None
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

        out (np.ndarray, optional): a reusable ``(>= M, max_points, F)``
            float32 buffer (e.g. ``(max_voxels, max_points, F)``) to write
            the voxels into (its first ``M`` rows are returned, zeroed
            first); saves a fresh allocation per frame.

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
    n = key.shape[0]
    num_cells = int(np.prod(grid.astype(np.int64)))
    if num_cells <= _DENSE_CELLS:
        # A table over the grid: each cell's first point (ufunc.at), then
        # the voxels' ranks by first appearance; no sort over the points.
        table = np.full(num_cells, n, np.int64)
        np.minimum.at(table, key, np.arange(n))
        hit = np.flatnonzero(table < n)
        appearance = np.argsort(table[hit])  # first points are distinct
        first = table[hit[appearance]]  # by rank
        num_total = first.shape[0]
        table[hit[appearance]] = np.arange(num_total)
        voxel_of = table[key]
    else:
        # Sparse grids: one stable sort of the cell keys.
        order = np.argsort(key, kind='stable')
        key_sorted = key[order]
        new_group = np.empty(n, dtype=bool)
        new_group[:1] = True
        np.not_equal(key_sorted[1:], key_sorted[:-1], out=new_group[1:])
        group_start = np.flatnonzero(new_group)
        firsts = order[group_start]  # each cell's first point
        appearance = np.argsort(firsts)
        first = firsts[appearance]
        num_total = first.shape[0]
        rank = np.empty(num_total, dtype=np.int64)
        rank[appearance] = np.arange(num_total)
        voxel_of = np.empty(n, np.int64)
        voxel_of[order] = rank[np.cumsum(new_group) - 1]
    if on_overflow == 'error' and num_total > max_voxels:
        raise VoxelOverflowError(
            f'the frame has {num_total} non-empty voxels, more than '
            f'max_voxels={max_voxels}; raise max_voxels or crop the cloud '
            "(on_overflow='drop' drops the extra voxels like mmcv)")
    num_voxels = min(num_total, max_voxels)
    kept = np.flatnonzero(voxel_of < num_voxels)
    voxel_of = voxel_of[kept]
    # stable sort by voxel (points keep their order inside a voxel); a
    # 16-bit key gets numpy's radix sort
    order = np.argsort(voxel_of.astype(np.uint16) if num_voxels <= 1 << 16
                       else voxel_of, kind='stable')
    voxel_sorted = voxel_of[order]
    counts = np.bincount(voxel_sorted, minlength=num_voxels)
    starts = np.cumsum(counts) - counts
    slot = np.arange(voxel_sorted.shape[0]) - starts[voxel_sorted]
    fits = slot < max_points

    shape = (num_voxels, max_points, num_features)
    if out is None:
        voxels = np.zeros(shape, np.float32)
    else:
        if (not isinstance(out, np.ndarray) or out.dtype != np.float32
                or out.ndim != 3 or out.shape[0] < num_voxels
                or out.shape[1:] != shape[1:] or not out.flags.c_contiguous):
            raise DeployInputError(
                f'out must be a C-contiguous float32 (>= {num_voxels}, '
                f'{max_points}, {num_features}) array, got '
                f'{getattr(out, "dtype", type(out))} '
                f'{tuple(np.shape(out))}')
        voxels = out[:num_voxels]
        voxels.fill(0)
    # rows of the (M * max_points, F) view, increasing: voxel, then slot
    rows = voxel_sorted[fits] * max_points + slot[fits]
    voxels.reshape(-1, num_features)[rows] = np.take(
        pts, point_ids[kept[order[fits]]], axis=0)
    num_points = np.minimum(counts, max_points).astype(np.int32)
    coors = cell[first[:num_voxels]][:, ::-1]
    return voxels, num_points, np.ascontiguousarray(coors, dtype=np.int32)


# ---------------------------------------------------------------------------
# 3. pillar decoration


def decorate_pillars(voxels, num_points, coors, voxel_size: Sequence[float],
                     point_cloud_range: Sequence[float],
                     with_cluster_center: bool = True,
                     with_voxel_center: bool = True,
                     with_distance: bool = False,
                     input_scale=None, out=None) -> np.ndarray:
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
        voxels: ``(M, P, F)`` from :func:`voxelize` (padded point slots
            zero, as :func:`voxelize` leaves them).
        num_points: ``(M,)`` valid points per voxel, each in ``1..P``.
        coors: ``(M, 3)`` ``(z, y, x)`` voxel indices.
        voxel_size, point_cloud_range: as for :func:`voxelize`.
        input_scale: optional ``(C,)`` per-channel factors.
        out: optional C-contiguous ``(1, C, N, P)`` float32 array with
            ``N >= M`` (e.g. the subgraph's fixed-size input, reused from
            frame to frame): the result is written into
            ``out[:, :, :M]`` and ``out`` is returned; slots ``M..N`` are
            left untouched (the caller zeroes them).

    Returns:
        ``(1, C, M, P)`` float32, ``C = F + 3 * with_cluster_center + 3 *
        with_voxel_center + with_distance`` (``out`` when given).
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
    if out is None:
        out = np.empty((1, channels, num_voxels, max_points), np.float32)
        dst = out[0]
    else:
        if (not isinstance(out, np.ndarray) or out.dtype != np.float32
                or out.ndim != 4 or out.shape[0] != 1
                or out.shape[1] != channels or out.shape[2] < num_voxels
                or out.shape[3] != max_points
                or not out.flags.c_contiguous):
            raise DeployInputError(
                f'out must be a C-contiguous float32 (1, {channels}, >= '
                f'{num_voxels}, {max_points}) array, got '
                f'{getattr(out, "dtype", type(out))} '
                f'{tuple(np.shape(out))}')
        dst = out[0, :, :num_voxels]
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
    # Padded slots of the point features (zero in ``voxels``) and of the
    # distance (sqrt(0)) are already zero; only the centre offsets need the
    # mask (x * 1.0 == x and x * 0.0 keeps x's sign, as masking every
    # channel did).
    if with_cluster_center or with_voxel_center:
        valid = (np.arange(max_points, dtype=npts.dtype)[None, :] <
                 npts[:, None]).astype(np.float32)
        dst[num_features:num_features + 3 * (bool(with_cluster_center) +
                                             bool(with_voxel_center))] *= \
            valid
    if scale is not None:
        dst *= scale[:, None, None]
    return out


# the one float32 below .5 whose ``x + 0.5`` rounds up to 1.0
_BELOW_HALF = np.nextafter(np.float32(0.5), np.float32(0))


def quantize_input(x: np.ndarray, fix_pos: int,
                   prescaled: bool = False) -> np.ndarray:
    """Put a DPU subgraph's float input on its int8 grid, in place, as the
    CPU does before handing the DPU its input tensor: ``q = round(x *
    2**fix_pos)`` with C ``round()`` (ties away from zero, exactly as
    :func:`~mmdet3d_vitis.quantization.backends.dpu_arithmetic.
    round_half_away`), saturated to [-128, 127], returned as ``q *
    2**-fix_pos``.  The ONNX model's own QuantizeLinear (ties to even) then
    leaves the values unchanged, so the deployed input matches the
    fake-quant model's bit for bit.

    ``prescaled``: ``x`` already holds ``x * 2**fix_pos`` (e.g. folded into
    the decoration's input scale), which saves a pass.
    """
    scale = np.float32(2.0**int(fix_pos))
    if not prescaled:
        np.multiply(x, scale, out=x)  # exact: a power of two
    # trunc(x + copysign(.5, x)) is C round() in float32 except for
    # +-0.49999997, where the addition rounds up to 1.0
    bad = np.abs(x) == _BELOW_HALF
    np.add(x, np.copysign(np.float32(0.5), x), out=x)
    np.trunc(x, out=x)
    x[bad] = 0
    np.clip(x, -128, 127, out=x)
    np.multiply(x, np.float32(1.0) / scale, out=x)
    return x


# ---------------------------------------------------------------------------
# 4. scatter


def _grid_hw(grid_hw) -> Tuple[int, int]:
    hw = [_positive_int('grid_hw', v) for v in np.asarray(grid_hw).tolist()] \
        if np.ndim(grid_hw) == 1 and len(grid_hw) == 2 else None
    if hw is None:
        raise DeployInputError(f'grid_hw must be (H, W), got {grid_hw!r}')
    return hw[0], hw[1]


def _pillar_features(features, num_pillars: Optional[int] = None
                     ) -> np.ndarray:
    """``(C, M)`` view of ``(M, C)`` features or of the pillar encoder's
    ``(1, C, N, 1)`` output (its first ``num_pillars`` columns when given,
    else all ``N``)."""
    feats = _as_array('features', features)
    if feats.ndim == 4:
        if feats.shape[0] != 1 or feats.shape[3] != 1:
            raise DeployInputError(
                'features must be (M, C) or the (1, C, M, 1) pillar encoder '
                f'output, got shape {tuple(feats.shape)}')
        if num_pillars is not None and num_pillars > feats.shape[2]:
            raise DeployInputError(
                f'{num_pillars} pillars but the pillar encoder output has '
                f'{feats.shape[2]} slots')
        return feats[0, :, :num_pillars, 0]
    if feats.ndim != 2:
        raise DeployInputError(
            f'features must be (M, C) or (1, C, M, 1), got shape '
            f'{tuple(feats.shape)}')
    return feats.T


def _cell_index(coors, num_pillars: int, height: int,
                width: int) -> np.ndarray:
    """Checked ``y * W + x`` (int64) of ``(M, 3)`` ``(z, y, x)`` coors."""
    crs = _as_array('coors', coors, ndim=2)
    if crs.shape != (num_pillars, 3) or crs.dtype.kind not in 'iu':
        raise DeployInputError(
            f'coors must be ({num_pillars}, 3) integers (z, y, x), got '
            f'{tuple(crs.shape)} {crs.dtype}')
    ys = crs[:, 1].astype(np.int64)
    xs = crs[:, 2].astype(np.int64)
    if ys.size and (ys.min() < 0 or ys.max() >= height or xs.min() < 0
                    or xs.max() >= width):
        raise DeployInputError(
            f'coors fall outside the {height} x {width} grid: y in '
            f'{int(ys.min())}..{int(ys.max())}, x in '
            f'{int(xs.min())}..{int(xs.max())}')
    return ys * width + xs


def _last_of_each_cell(index: np.ndarray) -> np.ndarray:
    """Positions of the last pillar of each distinct cell (sorted by cell)."""
    _, last = np.unique(index[::-1], return_index=True)
    return index.shape[0] - 1 - last


def scatter_pillars(features, coors, grid_hw: Sequence[int]) -> np.ndarray:
    """Scatter pillar features onto the BEV canvas like PointPillarsScatter.

    ``canvas[:, y * W + x] = features.T``; when two pillars share a cell the
    later one wins (what torch's indexing does on the CPU; here it is
    guaranteed).  Allocates a new canvas per call; :class:`ScatterCanvas`
    is the same operation on a canvas reused from frame to frame.

    Args:
        features: ``(M, C)`` pillar features, or the pillar encoder's
            ``(1, C, M, 1)`` output.
        coors: ``(M, 3)`` ``(z, y, x)`` voxel indices (z ignored).
        grid_hw: ``(H, W)`` of the canvas (mmdet3d's ``output_shape``).

    Returns:
        ``(1, C, H, W)`` float32, zero where there is no pillar.
    """
    cols = _pillar_features(features)  # (C, M)
    height, width = _grid_hw(grid_hw)
    index = _cell_index(coors, cols.shape[1], height, width)
    if index.size and np.bincount(index).max() > 1:
        last = _last_of_each_cell(index)
        index, cols = index[last], cols[:, last]
    canvas = np.zeros((cols.shape[0], height * width), np.float32)
    canvas[:, index] = cols
    return canvas.reshape(1, cols.shape[0], height, width)


class ScatterCanvas:
    """:func:`scatter_pillars` onto one preallocated canvas, frame by frame.

    ``PointPillarsScatter`` (and :func:`scatter_pillars`) allocate and zero
    a ``(C, H * W)`` canvas for every frame although only the pillars' cells
    (a few percent of a lidar BEV grid) are non-zero.  This class keeps one
    ``(1, C, H, W)`` float32 canvas; each call zeroes the cells the previous
    call wrote and this one does not write, then writes the new pillars with
    one vectorised assignment.  The result equals :func:`scatter_pillars`
    (the later pillar of a shared cell wins).

    The returned array *is* the canvas: the next call overwrites it.  Copy
    it to keep it (ONNX Runtime reads its inputs during ``run``, so feeding
    it to a session is fine).

    Args:
        channels (int): ``C``, the pillar feature width.
        grid_hw: ``(H, W)`` (mmdet3d's ``output_shape``).
    """

    def __init__(self, channels: int, grid_hw: Sequence[int]):
        self.channels = _positive_int('channels', channels)
        self.grid_hw = _grid_hw(grid_hw)
        cells = self.grid_hw[0] * self.grid_hw[1]
        self.canvas = np.zeros((1, self.channels) + self.grid_hw, np.float32)
        self._flat = self.canvas.reshape(-1)  # a view
        self._channel_offset = (np.arange(self.channels, dtype=np.int64) *
                                cells)[:, None]
        self._written = np.zeros(0, np.int64)  # cells of the last frame
        # per cell: the frame that last wrote it / the pillar that did
        self._stamp = np.zeros(cells, np.int64)
        self._owner = np.zeros(cells, np.int64)
        self._frame = 0

    def reset(self) -> None:
        """Zero the whole canvas."""
        self.canvas.fill(0)
        self._written = np.zeros(0, np.int64)

    def __call__(self, features, coors) -> np.ndarray:
        """Scatter one frame.

        Args:
            features: ``(M, C)`` pillar features or the pillar encoder's
                ``(1, C, N, 1)`` output with ``N >= M`` (its first ``M``
                slots are the pillars, the padding after them is ignored).
            coors: ``(M, 3)`` ``(z, y, x)`` voxel indices (z ignored).

        Returns:
            the ``(1, C, H, W)`` float32 canvas (reused by the next call).
        """
        crs = _as_array('coors', coors, ndim=2)
        cols = _pillar_features(features, crs.shape[0])  # (C, M)
        if cols.shape[0] != self.channels:
            raise DeployInputError(
                f'features have {cols.shape[0]} channels, the canvas '
                f'{self.channels}')
        index = _cell_index(crs, cols.shape[1], *self.grid_hw)
        num = index.shape[0]
        pillar = np.arange(num, dtype=np.int64)
        # a cell written twice keeps one owner: duplicates iff some pillar
        # does not own its cell (whatever order numpy assigns in)
        self._owner[index] = pillar
        if num and not np.array_equal(self._owner[index], pillar):
            last = _last_of_each_cell(index)
            index, cols = index[last], cols[:, last]
        self._frame += 1
        self._stamp[index] = self._frame
        stale = self._written[self._stamp[self._written] != self._frame]
        if stale.size:
            self._flat[(self._channel_offset + stale).reshape(-1)] = 0
        if index.size:
            self._flat[(self._channel_offset + index).reshape(-1)] = \
                cols.reshape(-1)
        self._written = index
        return self.canvas


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


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the rotated BEV boxes ``a[k]`` and ``b[k]``, ``(P, 5)`` each
    (float64), with mmcv's ``box_iou_rotated`` arithmetic."""
    # shift both to their mid-point, as mmcv does, for precision
    shift = (a[:, :2] + b[:, :2]) / 2
    a = a.copy()
    a[:, :2] -= shift
    b = b.copy()
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
    return _pair_iou(ref.repeat(others.shape[0], 0), others)


# IoU of at most this many candidate pairs is computed up front (in chunks
# of _PAIR_CHUNK); beyond it NMS intersects lazily, kept box by kept box.
_MAX_PAIRS = 400_000
_PAIR_CHUNK = 20_000


def _near_pairs(bx: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``(P, 2)`` index pairs ``i < j`` whose circumscribed circles meet
    (the same test as the lazy loop), via a k-d tree."""
    from scipy.spatial import cKDTree
    reach = 2 * float(radius.max()) * (1 + 1e-6) + 1e-9
    pairs = cKDTree(bx[:, :2]).query_pairs(reach, output_type='ndarray')
    if pairs.shape[0] == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    dist2 = ((bx[j, :2] - bx[i, :2])**2).sum(axis=1)
    near = dist2 <= (radius[j] + radius[i])**2 * (1 + 1e-6)
    pairs = pairs[near]
    return np.sort(pairs, axis=1).astype(np.int64)


def _may_reach(bx: np.ndarray, pairs: np.ndarray,
               iou_thr: float) -> np.ndarray:
    """Pairs whose IoU can reach ``iou_thr``: an upper bound from the
    boxes' axis-aligned hulls (intersection <= the hulls' overlap and <= the
    smaller box) and areas.  A margin keeps the bound safe for round-off;
    the exact IoU decides the rest."""
    i, j = pairs[:, 0], pairs[:, 1]
    cos, sin = np.abs(np.cos(bx[:, 4])), np.abs(np.sin(bx[:, 4]))
    half_x = (bx[:, 2] * cos + bx[:, 3] * sin) / 2
    half_y = (bx[:, 2] * sin + bx[:, 3] * cos) / 2
    ox = np.minimum(bx[i, 0] + half_x[i], bx[j, 0] + half_x[j]) - np.maximum(
        bx[i, 0] - half_x[i], bx[j, 0] - half_x[j])
    oy = np.minimum(bx[i, 1] + half_y[i], bx[j, 1] + half_y[j]) - np.maximum(
        bx[i, 1] - half_y[i], bx[j, 1] - half_y[j])
    area = bx[:, 2] * bx[:, 3]
    inter_ub = np.minimum(np.maximum(ox, 0) * np.maximum(oy, 0),
                          np.minimum(area[i], area[j]))
    with np.errstate(divide='ignore', invalid='ignore'):
        bound = inter_ub / (area[i] + area[j] - inter_ub)
    # NaN (degenerate boxes) stays in: the exact IoU handles it
    return ~(bound < iou_thr * (1 - 1e-6) - 1e-12)


def _greedy_from_pairs(n: int, pairs: np.ndarray, suppress: np.ndarray,
                       max_keep: Optional[int]) -> list:
    """Greedy NMS over boxes 0..n-1 (already in score order) given the
    pairs ``(i, j)``, ``i < j``, where a kept ``i`` suppresses ``j``."""
    edges = pairs[suppress]
    edges = edges[np.argsort(edges[:, 0], kind='stable')]
    starts = np.searchsorted(edges[:, 0], np.arange(n + 1))
    targets = edges[:, 1].tolist()
    starts = starts.tolist()
    alive = bytearray(b'\x01') * n
    keep = []
    limit = n if max_keep is None else max_keep
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        for j in targets[starts[i]:starts[i + 1]]:
            alive[j] = 0
    return keep


def _greedy_lazy(bx: np.ndarray, radius: np.ndarray, iou_thr: float,
                 max_keep: Optional[int]) -> list:
    n = bx.shape[0]
    alive = np.ones(n, dtype=bool)
    keep = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if rest.size == 0:
            break
        dist2 = ((bx[rest, :2] - bx[i, :2])**2).sum(axis=1)
        near = rest[dist2 <= (radius[rest] + radius[i])**2 * (1 + 1e-6)]
        if near.size:
            iou = rotated_iou_bev(bx[i], bx[near])
            alive[near[iou >= iou_thr]] = False
    return keep


def overlapping_pairs(boxes, iou_thr: float,
                      groups: Optional[np.ndarray] = None):
    """All index pairs ``(i, j)``, ``i < j``, of ``boxes`` (``(N, 5)``
    xywhr, float64) whose IoU is ``>= iou_thr``, as ``(P, 2)`` int64;
    with ``groups`` (``(N, G)`` bool, e.g. a box's classes) only pairs that
    share a group.

    Candidates come from a k-d tree on the centres (circumscribed circles
    that meet), then an axis-aligned upper bound on the IoU, then the exact
    IoU in a few vectorised batches.  Returns None when there are more than
    ``_MAX_PAIRS`` candidates (or non-finite sizes): callers then intersect
    lazily.
    """
    bx = np.asarray(boxes, np.float64).reshape(-1, 5)
    if bx.shape[0] < 2:
        return np.zeros((0, 2), np.int64)
    radius = 0.5 * np.hypot(bx[:, 2], bx[:, 3])
    if not np.isfinite(bx).all():
        return None
    pairs = _near_pairs(bx, radius)
    if pairs.shape[0] > _MAX_PAIRS:
        return None
    if groups is not None:
        pairs = pairs[(groups[pairs[:, 0]] & groups[pairs[:, 1]]).any(1)]
    pairs = pairs[_may_reach(bx, pairs, iou_thr)]
    if pairs.shape[0] == 0:
        return pairs
    iou = np.concatenate([
        _pair_iou(bx[pairs[k:k + _PAIR_CHUNK, 0]],
                  bx[pairs[k:k + _PAIR_CHUNK, 1]])
        for k in range(0, pairs.shape[0], _PAIR_CHUNK)
    ])
    return pairs[iou >= iou_thr]


def nms_with_pairs(scores, pairs: np.ndarray,
                   max_keep: Optional[int] = None,
                   subset: Optional[np.ndarray] = None) -> np.ndarray:
    """Greedy NMS given the overlapping pairs of :func:`overlapping_pairs`
    (computed once for a set of boxes): over ``subset`` (indices into that
    set, default all), in descending ``scores[subset]`` order.  Returns
    indices into the set, highest score first."""
    sc = np.asarray(scores).reshape(-1)
    idx = (np.arange(sc.shape[0]) if subset is None else
           np.asarray(subset, np.int64).reshape(-1))
    if subset is not None:
        sc = sc[idx] if sc.shape[0] != idx.shape[0] else sc
    order = np.argsort(-sc, kind='stable')
    n = order.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    total = int(max(idx.max(), pairs.max() if pairs.size else 0)) + 1
    rank = np.full(total, -1, np.int64)
    rank[idx[order]] = np.arange(n)
    r = rank[pairs] if pairs.size else np.zeros((0, 2), np.int64)
    r = r[(r >= 0).all(axis=1)]
    r.sort(axis=1)
    keep = _greedy_from_pairs(n, r, np.ones(r.shape[0], bool), max_keep)
    return idx[order[np.asarray(keep, dtype=np.int64)]]


def nms_rotated_bev(boxes, scores, iou_thr: float,
                    max_keep: Optional[int] = None) -> np.ndarray:
    """Greedy rotated NMS, the semantics of mmcv's ``nms_rotated``.

    Boxes are visited in descending score order; a box suppresses every
    later box whose IoU with it is ``>= iou_thr``.  Only pairs whose
    circumscribed circles meet are intersected: up to ``_MAX_PAIRS`` of
    them up front (:func:`overlapping_pairs`) before a cheap greedy pass (no
    numpy call per box); with more (e.g. an untrained head, where huge
    boxes all overlap) lazily, each kept box with its surviving neighbours.
    Both give the same result.

    Args:
        boxes: ``(N, 5)`` ``(x, y, w, h, angle)``.
        scores: ``(N,)``.
        iou_thr (float): IoU threshold.
        max_keep (int, optional): stop once this many boxes are kept (the
            first ``max_keep`` of the full result).

    Returns:
        int64 indices into ``boxes`` of the kept boxes, highest score first.
    """
    bx = np.asarray(boxes, np.float64).reshape(-1, 5)
    sc = np.asarray(scores).reshape(-1)
    if sc.shape[0] != bx.shape[0]:
        raise DeployInputError(
            f'{bx.shape[0]} boxes but {sc.shape[0]} scores')
    if bx.shape[0] == 0:
        return np.zeros(0, np.int64)
    pairs = overlapping_pairs(bx, iou_thr)
    if pairs is not None:
        return nms_with_pairs(sc, pairs, max_keep)
    order = np.argsort(-sc, kind='stable')
    bx = bx[order]
    radius = 0.5 * np.hypot(bx[:, 2], bx[:, 3])
    keep = _greedy_lazy(bx, radius, iou_thr, max_keep)
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
        self._best: Optional[np.ndarray] = None
        self._above: Optional[np.ndarray] = None
        # logit(score_thr) less a margin: the float32 sigmoid of a logit
        # just below it may still exceed score_thr (the exact test follows)
        thr = self.score_thr
        self._logit_thr = (-np.inf if thr <= 0 else np.inf if thr >= 1 else
                           float(np.log(thr / (1 - thr))) - 1e-3)

    def _best_buffer(self, size: int) -> np.ndarray:
        if self._best is None or self._best.shape[0] != size:
            self._best = np.empty(size, np.float32)
        return self._best

    def _above_buffer(self, size: int) -> np.ndarray:
        if self._above is None or self._above.shape[0] != size:
            self._above = np.empty(size, np.int64)
        return self._above

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

    def _range_centres(self, rng, height: int, width: int):
        """z, y, x anchor centres of one range (float64, as mmdet3d's
        ``AlignedAnchor3DRangeGenerator``; one more than the cells, the
        last unused)."""
        zs = np.linspace(rng[2], rng[5], 2)
        ys = np.linspace(rng[1], rng[4], height + 1)
        xs = np.linspace(rng[0], rng[3], width + 1)
        if not self.align_corner:
            zs = zs + (zs[1] - zs[0]) / 2
            ys = ys + (ys[1] - ys[0]) / 2
            xs = xs + (xs[1] - xs[0]) / 2
        return zs, ys, xs

    def anchors(self, featmap_hw: Tuple[int, int]) -> np.ndarray:
        """``(H * W * A, code_size)`` float32 anchors, order (y, x, a)."""
        height, width = (int(v) for v in featmap_hw)
        key = (height, width)
        if key in self._anchor_cache:
            return self._anchor_cache[key]
        per_range = []
        n_rot = len(self.rotations)
        for rng, size in zip(self.ranges, self.sizes):
            zs, ys, xs = self._range_centres(rng, height, width)
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

    def anchors_at(self, featmap_hw: Tuple[int, int],
                   index: np.ndarray) -> np.ndarray:
        """``anchors(featmap_hw)[index]`` without the full table: each
        anchor from its range's x / y centres and its size / rotation
        (the same float32 values, computed the same way)."""
        height, width = (int(v) for v in featmap_hw)
        key = ('parts', height, width)
        if key not in self._anchor_cache:
            xs, ys, base, range_of = [], [], [], []
            for r, (rng, size) in enumerate(zip(self.ranges, self.sizes)):
                zs, y, x = self._range_centres(rng, height, width)
                xs.append(x[:width])
                ys.append(y[:height])
                for s in size:
                    for rot in self.rotations:
                        base.append([zs[0], *s, rot] +
                                    [0.0] * (self.box_code_size - 7))
                        range_of.append(r)
            self._anchor_cache[key] = (
                np.asarray(xs).astype(np.float32),
                np.asarray(ys).astype(np.float32),
                np.asarray(base).astype(np.float32),
                np.asarray(range_of, np.int64))
        xs, ys, base, range_of = self._anchor_cache[key]
        out = np.empty((index.shape[0], self.box_code_size), np.float32)
        kernels.gather_anchors(np.ascontiguousarray(index, np.int64),
                               self.num_anchors, width, range_of, xs, ys,
                               base, out)
        return out

    def decode_boxes(self, anchors: np.ndarray,
                     deltas: np.ndarray) -> np.ndarray:
        """``DeltaXYZWLHRBBoxCoder.decode`` in float32."""
        n = anchors.shape[0]
        boxes = np.empty((n, self.box_code_size), np.float32)
        kernels.decode_rows(
            np.zeros((n, 1), np.float32),
            np.ascontiguousarray(deltas, np.float32),
            np.zeros((n, 2), np.float32),
            np.ascontiguousarray(anchors, np.float32),
            np.empty((n, 1), np.float32), boxes, np.empty((n, 5)),
            np.empty(n, np.int64))
        return boxes

    def _head_map(self, name, value, per_anchor, layout):
        """One frame's ``(A * K, H, W)`` (NCHW) or ``(H, W, A * K)`` (NHWC)
        head map (a leading batch axis of 1 allowed), shape-checked."""
        arr = _as_array(name, value)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        channels = self.num_anchors * per_anchor
        nhwc = layout == 'NHWC'
        if arr.ndim != 3 or arr.shape[2 if nhwc else 0] != channels:
            want = f'(H, W, {channels})' if nhwc else f'({channels}, H, W)'
            raise DeployInputError(
                f'{name} must be {want} ({layout}, num_anchors '
                f'{self.num_anchors} x {per_anchor}), got shape '
                f'{tuple(np.shape(value))}')
        return arr

    def _map(self, name, value, per_anchor):
        return np.asarray(self._head_map(name, value, per_anchor, 'NCHW'),
                          np.float32)

    def _rank(self, best: np.ndarray, count: int, to_anchor=None):
        """The anchors to decode from the best logit of each (``best``,
        in map order) and the ``count`` positions above the score
        threshold (``self._above``): the ``nms_pre`` best of them by logit
        (ties by anchor), or all in anchor order without ``nms_pre``.
        ``to_anchor`` maps map positions to anchor indices."""
        sel = self._above[:count]
        vals = best[sel]
        if 0 < self.nms_pre < count:
            # the sigmoid is monotonic: rank anchors by their best logit and
            # take the sigmoid of the nms_pre kept ones only (which of
            # equal logits make the cut is as implementation-defined as
            # torch.topk's)
            part = np.argpartition(-vals, self.nms_pre - 1)[:self.nms_pre]
            sel, vals = sel[part], vals[part]
        top = sel if to_anchor is None else to_anchor(sel)
        if not 0 < self.nms_pre < best.shape[0]:
            # mmdet3d keeps the anchor order without nms_pre
            order = np.argsort(top)
        elif to_anchor is None and count <= self.nms_pre:
            # top is increasing: a stable sort keeps equal logits by anchor
            order = np.argsort(-vals, kind='stable')
        else:
            order = np.lexsort((top, -vals))  # by logit, then anchor
        return top[order], sel[order]

    def _select_nchw(self, cls_score, bbox_pred, dir_cls_pred):
        cls_map = self._map('cls_score', cls_score, self.num_classes)
        box_map = self._map('bbox_pred', bbox_pred, self.box_code_size)
        dir_map = self._map('dir_cls_pred', dir_cls_pred, 2)
        hw = cls_map.shape[1:]
        if box_map.shape[1:] != hw or dir_map.shape[1:] != hw:
            raise DeployInputError(
                f'head maps disagree on H x W: {cls_map.shape[1:]}, '
                f'{box_map.shape[1:]}, {dir_map.shape[1:]}')
        # Anchor k = (y * W + x) * A + a; channel a * C + c of the maps.
        # Only the best logit of every anchor is computed on the full maps
        # (no transposed copy of them); the rest for the kept anchors only.
        num_a = self.num_anchors
        num_cells = hw[0] * hw[1]
        cls4 = cls_map.reshape(num_a, self.num_classes, -1)
        best = self._best_buffer(num_cells * num_a)
        flat_cls = np.ascontiguousarray(cls_map.reshape(cls_map.shape[0], -1))
        count, finite = kernels.best_logits(
            flat_cls, num_a, self.num_classes, self._logit_thr, best,
            self._above_buffer(best.shape[0]))
        if not finite:
            raise DeployInputError(
                'cls_score holds NaN or inf values (a corrupt subgraph '
                'output?)')

        def to_anchor(pos):  # a * H * W + cell -> cell * A + a
            a_idx, cell = np.divmod(pos, num_cells)
            return cell * num_a + a_idx

        top, pos = self._rank(best, count, to_anchor)
        a_idx, cell = np.divmod(pos, num_cells)
        logits = cls4[a_idx, :, cell]
        deltas = box_map.reshape(num_a, self.box_code_size, -1)[a_idx, :,
                                                                cell]
        dirs = dir_map.reshape(num_a, 2, -1)[a_idx, :, cell]
        return hw, top, logits, deltas, dirs

    def _rows(self, name, value, per_anchor):
        """An NHWC map ``(1, H, W, A * K)`` as ``(H * W * A, K)`` rows: row
        ``k`` is anchor ``k``'s ``K`` values."""
        arr = self._head_map(name, value, per_anchor, 'NHWC')
        rows = np.ascontiguousarray(arr).reshape(-1, per_anchor)
        if arr.dtype.kind == 'f' and not np.isfinite(rows).all():
            raise DeployInputError(
                f'{name} holds NaN or inf values (a corrupt subgraph '
                'output?)')
        return arr.shape[:2], rows

    def _select_nhwc(self, cls_score, bbox_pred, dir_cls_pred, scales):
        hw, cls_rows = self._rows('cls_score', cls_score, self.num_classes)
        hw_box, box_rows = self._rows('bbox_pred', bbox_pred,
                                      self.box_code_size)
        hw_dir, dir_rows = self._rows('dir_cls_pred', dir_cls_pred, 2)
        if hw_box != hw or hw_dir != hw:
            raise DeployInputError(
                f'head maps disagree on H x W: {hw}, {hw_box}, {hw_dir}')
        s_cls, s_box, _ = (1.0, 1.0, 1.0) if scales is None else scales
        best = self._best_buffer(cls_rows.shape[0])
        # the threshold in the map's units (a power-of-two scale: exact)
        count = kernels.best_of_rows(cls_rows, self._logit_thr / s_cls, best,
                                     self._above_buffer(best.shape[0]))
        top, _ = self._rank(best, count)
        logits = kernels.gather_rows(cls_rows, top, s_cls)
        deltas = kernels.gather_rows(box_rows, top, s_box)
        return hw, top, logits, deltas, dir_rows[top]

    def __call__(self, cls_score, bbox_pred, dir_cls_pred,
                 layout: str = 'NCHW', scales=None) -> Dict[str, np.ndarray]:
        """Detections from one frame's head maps.

        ``layout='NCHW'``: float maps ``(A * K, H, W)``; ``'NHWC'``: maps
        ``(H, W, A * K)`` (channel ``a * K + k`` either way), e.g. the
        DPU's int8 outputs, with ``scales`` = the value of one unit of each
        map (``2 ** -fix_pos``; None: 1).
        """
        if layout == 'NHWC':
            hw, top, logits, deltas, dirs = self._select_nhwc(
                cls_score, bbox_pred, dir_cls_pred, scales)
        elif layout == 'NCHW':
            hw, top, logits, deltas, dirs = self._select_nchw(
                cls_score, bbox_pred, dir_cls_pred)
        else:
            raise DeployInputError(
                f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        # only the kept anchors' regressions can reach the result
        if not (np.isfinite(deltas).all() and np.isfinite(dirs).all()):
            raise DeployInputError(
                'bbox_pred / dir_cls_pred hold NaN or inf values (a corrupt '
                'subgraph output?)')
        anchors = self.anchors_at(hw, top)
        n = top.shape[0]
        scores = np.empty((n, self.num_classes), np.float32)
        boxes = np.empty((n, self.box_code_size), np.float32)
        bev = np.empty((n, 5))
        dir_label = np.empty(n, np.int64)
        kernels.decode_rows(
            np.ascontiguousarray(logits, np.float32),
            np.ascontiguousarray(deltas, np.float32),
            np.ascontiguousarray(dirs), anchors, scores, boxes, bev,
            dir_label)
        # per class: boxes with score > score_thr, rotated NMS; a class's
        # kept boxes beyond max_num can never make the final top max_num
        # (its first max_num outrank them), so each stops there
        size = scores.shape[0] * self.num_classes
        idx, labels = np.empty(size, np.int64), np.empty(size, np.int64)
        num = kernels.multiclass_nms(bev, scores, self.score_thr,
                                     self.nms_thr, max(self.max_num, 1), idx,
                                     labels)
        idx, labels = idx[:num], labels[:num]
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
