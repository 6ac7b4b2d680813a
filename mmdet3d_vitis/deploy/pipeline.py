"""Run a deploy folder on a point cloud: compiled glue + ONNX Runtime.

    from mmdet3d_vitis.deploy import Pipeline
    pipeline = Pipeline('quantize_result/deploy')
    dets = pipeline(points)     # (N, num_features) float array
    dets['bboxes'], dets['scores'], dets['labels']
    pipeline.stage_times        # seconds per stage of the last call

The folder is what ``tools/quant.py --quant_mode test --dump_xmodel`` writes
(``pipeline.json`` + one int8 QDQ ONNX file per DPU subgraph); no mmdet3d
model is built.  A frame runs, as the board's glue does:

* ``check_points`` (width, NaN / inf);
* ``voxelize``: hard voxelization (mmcv's semantics), pillar decoration and
  rounding onto the pillar encoder's int8 grid (the DPU's rounding), written
  straight into the encoder's fixed-size int8 input
  (:func:`.kernels.voxelize_encode`);
* ``pillar_encoder`` (ONNX; int8 in, int8 NHWC pillar rows out);
* ``scatter``: the rows into the BEV subgraph's int8 NHWC canvas,
  requantized between the two subgraphs' scales
  (:func:`.kernels.scatter_rows`);
* ``bev`` (ONNX; int8 NHWC head maps out);
* ``decode``: :class:`AnchorDecoder` (box decoding + rotated NMS).

These are the partitioned int8 detector's ``predict`` steps; the numpy
functions of :mod:`.glue` are their reference implementations.  The encoder
input and the canvas are allocated once and reused: a frame clears only
what the previous frame wrote (so a Pipeline runs one frame at a time; use
one Pipeline per thread).

An empty cloud, or one with no point inside the point cloud range (no
pillar), gives empty detections (``(0, code_size)`` boxes) without running
the subgraphs.
"""
import os.path as osp
import time
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import numpy as np

from . import kernels
from .glue import (AnchorDecoder, DeployInputError, VoxelOverflowError,
                   _float_vector,
                   _voxel_geometry, check_points)
from .manifest import ManifestError, head_output_roles, load_manifest

__all__ = ['Pipeline', 'STAGES']

#: the keys of :attr:`Pipeline.stage_times`, in execution order
STAGES = ('check_points', 'voxelize', 'pillar_encoder', 'scatter', 'bev',
          'decode')

# voxel grids up to this many cells (a 16 M-entry int32 table); pillar grids
# are far smaller (0.16 m pillars over 200 m: 1.6 M)
_MAX_TABLE_CELLS = 1 << 24


class Pipeline:
    """A deployed PointPillars-type detector on the CPU (ONNX Runtime).

    Args:
        deploy_dir: the deploy folder (or its ``pipeline.json``).
        providers: ONNX Runtime execution providers (default CPU).
        num_threads: intra-op threads of each session (None: ORT default).
        drop_invalid: drop points with NaN / inf instead of raising.
        on_overflow: ``'drop'`` (mmcv's behaviour) or ``'error'`` when a
            frame has more pillars than ``max_voxels``.

    Raises:
        ManifestError: missing / corrupt / inconsistent ``pipeline.json`` or
            ONNX files (a :class:`~mmdet3d_vitis.errors.UserInputError`).
    """

    def __init__(self, deploy_dir: str,
                 providers: Optional[Sequence[str]] = None,
                 num_threads: Optional[int] = None,
                 drop_invalid: bool = False, on_overflow: str = 'drop'):
        if on_overflow not in ('drop', 'error'):
            raise DeployInputError(
                f"on_overflow must be 'drop' or 'error', got {on_overflow!r}")
        self.manifest = load_manifest(deploy_dir)
        self.deploy_dir = (deploy_dir if osp.isdir(deploy_dir) else
                           osp.dirname(osp.abspath(deploy_dir)))
        m = self.manifest
        self.class_names = list(m['model']['class_names'])
        self.num_features = int(m['points']['num_features'])
        vox = m['voxelization']
        self.voxel_size = list(vox['voxel_size'])
        self.point_cloud_range = list(vox['point_cloud_range'])
        self.max_num_points = int(vox['max_num_points'])
        self.max_voxels = int(vox['max_voxels'])
        dec = m['decoration']
        self.decoration = dict(
            with_cluster_center=bool(dec['with_cluster_center']),
            with_voxel_center=bool(dec['with_voxel_center']),
            with_distance=bool(dec['with_distance']))
        self.input_scale = np.asarray(dec['input_scale'], np.float32)
        self.num_voxels = int(dec['num_voxels'])
        self.grid_hw = tuple(int(v) for v in m['scatter']['grid_hw'])
        self.decoder = AnchorDecoder.from_config(m['head'], m['test_cfg'])
        self.roles = head_output_roles(m)
        self.drop_invalid = drop_invalid
        self.on_overflow = on_overflow
        subs = {sub['name']: sub for sub in m['subgraphs']}
        for sub in m['subgraphs']:
            if sub['file'].endswith('.xmodel'):
                raise ManifestError(
                    f'{osp.join(self.deploy_dir, sub["file"])}: an xmodel '
                    '(nndct export) runs on the board with VART after '
                    'vai_c_xir compiles it; Pipeline runs the ONNX deploy '
                    'folders of the builtin backend')
        enc_in, enc_out = self._boundaries(subs)
        self.input_fix_pos = int(enc_in['fix_pos'])
        self.sessions = OrderedDict()
        for sub in m['subgraphs']:
            self.sessions[sub['name']] = self._session(
                sub, providers, num_threads)
        self._enc_name = enc_in['name']
        self._bev_name = subs['bev']['inputs'][0]['name']
        self.stage_times: Dict[str, float] = {}
        self._init_glue(subs)

    def _boundaries(self, subs: dict):
        """The int8 boundaries the glue writes and reads (pipeline.json
        version 2 of the builtin backend), checked against its geometry."""
        enc, bev = subs['pillar_encoder'], subs['bev']
        enc_in, enc_out = enc['inputs'][0], enc['outputs'][0]
        bev_in = bev['inputs'][0]
        channels = self.input_scale.shape[0]
        height, width = self.grid_hw
        want = [
            ('pillar_encoder input', enc_in, 'int8', 'NCHW',
             [1, channels, self.num_voxels, self.max_num_points]),
            ('pillar_encoder output', enc_out, 'int8', 'NHWC',
             [1, self.num_voxels, 1, None]),
            ('bev input', bev_in, 'int8', 'NHWC', [1, height, width, None]),
        ]
        for what, entry, dtype, layout, shape in want:
            got = list(entry.get('shape') or [])
            if not isinstance(entry.get('fix_pos'), int):
                raise ManifestError(
                    f'{self.deploy_dir}: the {what} has no fix_pos')
            if (entry['dtype'], entry['layout']) != (dtype, layout) or len(
                    got) != 4 or any(w is not None and g != w
                                     for g, w in zip(got, shape)):
                raise ManifestError(
                    f'{self.deploy_dir}: the {what} is {entry["dtype"]} '
                    f'{entry["layout"]} {got}; the runtime needs {dtype} '
                    f'{layout} {[w or "C" for w in shape]} (re-export with '
                    'tools/quant.py --quant_mode test --dump_xmodel)')
        if enc_out['shape'][3] != bev_in['shape'][3]:
            raise ManifestError(
                f'{self.deploy_dir}: the pillar encoder returns '
                f'{enc_out["shape"][3]} channels, the bev subgraph takes '
                f'{bev_in["shape"][3]}')
        for o in bev['outputs']:
            if (o['dtype'], o['layout']) != ('int8', 'NHWC') or not \
                    isinstance(o.get('fix_pos'), int):
                raise ManifestError(
                    f'{self.deploy_dir}: bev output {o["name"]} is '
                    f'{o["dtype"]} {o["layout"]}; the runtime reads the '
                    'DPU\'s int8 NHWC head maps (re-export with '
                    'tools/quant.py --quant_mode test --dump_xmodel)')
        vs, pcr, grid = _voxel_geometry(self.voxel_size,
                                        self.point_cloud_range)
        if grid[2] != 1 or (int(grid[1]), int(grid[0])) != self.grid_hw:
            raise ManifestError(
                f'{self.deploy_dir}: the voxel grid {grid.tolist()} (x, y, '
                f'z) is not the pillar grid of scatter.grid_hw '
                f'{list(self.grid_hw)}')
        self._requant = (int(enc_out['fix_pos']), int(bev_in['fix_pos']))
        return enc_in, enc_out

    def _init_glue(self, subs: dict) -> None:
        """Buffers reused from frame to frame (see the kernels)."""
        vs, pcr, grid = _voxel_geometry(self.voxel_size,
                                        self.point_cloud_range)
        cells = int(np.prod(grid))
        if cells > _MAX_TABLE_CELLS:
            raise ManifestError(
                f'{self.deploy_dir}: a {grid.tolist()} voxel grid has '
                f'{cells} cells, more than the runtime\'s table '
                f'({_MAX_TABLE_CELLS})')
        self._vs, self._range_min, self._grid = vs, pcr[:3].copy(), grid
        vs64 = _float_vector('voxel_size', self.voxel_size, 3)
        pcr64 = _float_vector('point_cloud_range', self.point_cloud_range, 6)
        # as decorate_pillars computes the voxel centres
        self._centre_offset = (vs64 / 2 + pcr64[:3]).astype(np.float32)
        self._table = np.full(cells, -1, np.int32)
        self._cell_of = np.empty(0, np.int64)
        points = self.max_num_points
        self._point_ids = np.zeros((self.max_voxels, points), np.int32)
        self._num_points = np.zeros(self.max_voxels, np.int32)
        self._prev_num_points = np.zeros(self.max_voxels, np.int32)
        self._prev_num_voxels = 0
        self._coors = np.zeros((self.max_voxels, 3), np.int32)
        # decorate straight into the encoder's integer units (input scale
        # times 2**fix_pos: powers of two, so exact)
        self._enc_scale = (self.input_scale *
                           np.float32(2.0**self.input_fix_pos))
        channels = self.input_scale.shape[0]
        self._enc_input = np.zeros(
            (1, channels, self.num_voxels, points), np.int8)
        bev_c = int(subs['bev']['inputs'][0]['shape'][3])
        height, width = self.grid_hw
        self._canvas = np.zeros((1, height, width, bev_c), np.int8)
        self._written = np.zeros(self.max_voxels, np.int64)
        self._num_written = 0
        # one byte per cell (cache-resident): the call that last wrote it,
        # counted modulo 255 (the stamps restart from zero on wrap-around)
        self._stamp = np.zeros(height * width, np.uint8)
        self._frame = 0
        src, dst = self._requant
        self._table_q = kernels.requant_table(src, dst)
        self._identity = src == dst
        # ONNX Runtime reads and writes these buffers in place (I/O
        # binding): no tensor is allocated or copied per frame
        enc_out = subs['pillar_encoder']['outputs'][0]
        self._enc_rows = np.zeros(enc_out['shape'], np.int8)
        self._enc_binding = self._bind(
            'pillar_encoder', {self._enc_name: self._enc_input},
            {enc_out['name']: self._enc_rows})
        self._head_maps = OrderedDict(
            (o['name'], np.zeros(o['shape'], np.int8))
            for o in subs['bev']['outputs'])
        unit = {o['name']: o['scale'] for o in subs['bev']['outputs']}
        self._head_scales = tuple(
            unit[self.roles[r]]
            for r in ('cls_score', 'bbox_pred', 'dir_cls_pred'))
        self._bev_binding = self._bind(
            'bev', {self._bev_name: self._canvas}, self._head_maps)

    def _bind(self, name: str, inputs: dict, outputs: dict):
        binding = self.sessions[name].io_binding()
        for key, arr in inputs.items():
            binding.bind_cpu_input(key, arr)
        for key, arr in outputs.items():
            binding.bind_output(key, 'cpu', 0, arr.dtype, list(arr.shape),
                                arr.ctypes.data)
        return binding

    def _session(self, sub: dict, providers, num_threads):
        import onnxruntime as ort
        path = osp.join(self.deploy_dir, sub['file'])
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(
                path, opts, providers=list(providers or
                                           ['CPUExecutionProvider']))
        except Exception as e:  # ORT raises its own Fail / InvalidGraph
            raise ManifestError(
                f'{path}: not a loadable ONNX model for subgraph '
                f'{sub["name"]!r} ({type(e).__name__}: {e})') from e
        want_in = [t['name'] for t in sub['inputs']]
        want_out = [t['name'] for t in sub['outputs']]
        got_in = [i.name for i in sess.get_inputs()]
        got_out = [o.name for o in sess.get_outputs()]
        if got_in != want_in or got_out != want_out:
            raise ManifestError(
                f'{path}: inputs {got_in} / outputs {got_out} do not match '
                f'pipeline.json ({want_in} / {want_out})')
        return sess

    def empty_result(self) -> Dict[str, np.ndarray]:
        return dict(
            bboxes=np.zeros((0, self.decoder.box_code_size), np.float32),
            scores=np.zeros((0, ), np.float32),
            labels=np.zeros((0, ), np.int64))

    def _points(self, points) -> np.ndarray:
        """``points`` as C-contiguous float32 ``(N, num_features)``,
        checked (shape, NaN / inf) as :func:`.glue.check_points` does."""
        if (isinstance(points, np.ndarray) and points.dtype == np.float32
                and points.ndim == 2 and points.shape[1] == self.num_features
                and points.flags.c_contiguous):
            if kernels.first_non_finite(points) < 0:
                return points  # the common case: one pass, no copy
        return check_points(points, self.num_features,
                            drop_invalid=self.drop_invalid)

    def _voxelize(self, pts: np.ndarray) -> int:
        if self._cell_of.shape[0] < pts.shape[0]:
            self._cell_of = np.empty(max(pts.shape[0], 1 << 16), np.int64)
        num, num_total = kernels.voxelize_encode(
            pts, self._vs, self._range_min, self._grid, self.max_num_points,
            self.max_voxels, self._table, self._cell_of, self._point_ids,
            self._num_points, self._prev_num_points, self._prev_num_voxels,
            self._coors, self._centre_offset,
            self.decoration['with_cluster_center'],
            self.decoration['with_voxel_center'],
            self.decoration['with_distance'], self._enc_scale, 1.0,
            self._enc_input[0])
        self._prev_num_voxels = num
        if self.on_overflow == 'error' and num_total > self.max_voxels:
            raise VoxelOverflowError(
                f'the frame has {num_total} non-empty voxels, more than '
                f'max_voxels={self.max_voxels}; raise max_voxels or crop '
                "the cloud (on_overflow='drop' drops the extra voxels like "
                'mmcv)')
        return num

    def encoder_input(self) -> np.ndarray:
        """The pillar encoder's int8 input of the last frame (a view of the
        reused buffer)."""
        return self._enc_input

    def voxel_coors(self) -> np.ndarray:
        """``(M, 3)`` ``(z, y, x)`` pillar indices of the last frame."""
        return self._coors[:self._prev_num_voxels]

    def scatter(self, rows: np.ndarray, coors: np.ndarray) -> np.ndarray:
        """Scatter int8 pillar rows (the pillar encoder's ``(1, N, 1, C)``
        output; its first ``M`` rows) to the cells of ``coors`` (``(M, 3)``
        int32 ``(z, y, x)``, e.g. :meth:`voxel_coors`) of the reused int8
        NHWC canvas, requantized to the bev subgraph's input scale; clears
        the cells the previous call wrote.  Returns the canvas (the next
        call overwrites it)."""
        flat = self._canvas.reshape(-1, self._canvas.shape[3])
        rows2d = rows.reshape(rows.shape[1], rows.shape[3])
        num = coors.shape[0]
        if (rows2d.shape[1] != flat.shape[1] or num > rows2d.shape[0]
                or num > self._written.shape[0]):
            raise DeployInputError(
                f'{num} pillars of {rows2d.shape[1]} channels do not fit '
                f'the encoder output {tuple(rows.shape)} / canvas '
                f'{tuple(self._canvas.shape)}')
        self._frame = self._frame % 255 + 1
        if self._frame == 1:
            self._stamp.fill(0)
        self._num_written = kernels.scatter_rows(
            rows2d, coors, num, self.grid_hw[1], self._table_q,
            self._identity, flat, self._written, self._num_written,
            self._stamp, self._frame)
        return self._canvas

    def __call__(self, points) -> Dict[str, np.ndarray]:
        """Detections of one frame.

        Args:
            points: ``(N, num_features)`` array (x, y, z, ... as the test
                pipeline hands them to the detector).

        Returns:
            ``dict(bboxes=(K, 7 or 9) float32 LiDAR boxes (x, y, z bottom
            centre, dx, dy, dz, yaw[, vx, vy]) as mmdet3d's
            ``LiDARInstance3DBoxes.tensor``, scores=(K,) float32,
            labels=(K,) int64)`` (indices into :attr:`class_names`).
        """
        times = OrderedDict()
        t0 = time.perf_counter()

        def lap(name):
            nonlocal t0
            t1 = time.perf_counter()
            times[name] = t1 - t0
            t0 = t1

        pts = self._points(points)
        lap('check_points')
        num = self._voxelize(pts)
        lap('voxelize')
        if num == 0:
            self.stage_times = dict(times)
            return self.empty_result()
        self.sessions['pillar_encoder'].run_with_iobinding(
            self._enc_binding)
        lap('pillar_encoder')
        self.scatter(self._enc_rows, self._coors[:num])
        lap('scatter')
        self.sessions['bev'].run_with_iobinding(self._bev_binding)
        lap('bev')
        maps = self._head_maps
        result = self.decoder(maps[self.roles['cls_score']],
                              maps[self.roles['bbox_pred']],
                              maps[self.roles['dir_cls_pred']],
                              layout='NHWC', scales=self._head_scales)
        lap('decode')
        self.stage_times = dict(times)
        return result
