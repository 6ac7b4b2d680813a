"""Run a deploy folder on a point cloud: numpy glue + ONNX Runtime.

    from mmdet3d_vitis.deploy import Pipeline
    pipeline = Pipeline('quantize_result/deploy')
    dets = pipeline(points)     # (N, num_features) float array
    dets['bboxes'], dets['scores'], dets['labels']
    pipeline.stage_times        # seconds per stage of the last call

The folder is what ``tools/quant.py --quant_mode test --dump_xmodel`` writes
(``pipeline.json`` + one int8 QDQ ONNX file per DPU subgraph); no mmdet3d
model is built.  A frame runs ``check_points -> voxelize -> decorate_pillars
(with the calibrated input scale, then rounded onto the encoder's int8
input grid as the DPU rounds: quantize_input) -> pillar_encoder (ONNX) ->
scatter (:class:`ScatterCanvas`) -> bev (ONNX) -> AnchorDecoder`` (decode +
rotated NMS), the same steps as the partitioned int8 detector's
``predict``.

The pillar encoder's fixed-size input and the BEV canvas are allocated
once and reused: a frame zeroes only what the previous frame wrote (so a
Pipeline runs one frame at a time; use one Pipeline per thread).

An empty cloud, or one with no point inside the point cloud range (no
pillar), gives empty detections (``(0, code_size)`` boxes) without running
the subgraphs.
"""
import os.path as osp
import time
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import numpy as np

from .glue import (AnchorDecoder, ScatterCanvas, check_points,
                   decorate_pillars, quantize_input, voxelize)
from .manifest import ManifestError, head_output_roles, load_manifest

__all__ = ['Pipeline', 'STAGES']

#: the keys of :attr:`Pipeline.stage_times`, in execution order
STAGES = ('check_points', 'voxelize', 'decorate', 'pillar_encoder',
          'scatter', 'bev', 'decode')


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
        # the pillar encoder's input goes onto its int8 grid here, with the
        # DPU's rounding (see quantize_input)
        enc = next(sub for sub in m['subgraphs']
                   if sub['name'] == 'pillar_encoder')
        fix_pos = enc['inputs'][0].get('fix_pos')
        self.input_fix_pos = None if fix_pos is None else int(fix_pos)
        # decorate straight into the encoder's integer units (input scale
        # times 2**fix_pos: powers of two, so exact), then round in place
        self._enc_scale = self.input_scale * np.float32(
            2.0**(self.input_fix_pos or 0))
        self.grid_hw = tuple(int(v) for v in m['scatter']['grid_hw'])
        self.decoder = AnchorDecoder.from_config(m['head'], m['test_cfg'])
        self.roles = head_output_roles(m)
        self.drop_invalid = drop_invalid
        self.on_overflow = on_overflow
        self.sessions = OrderedDict()
        for sub in m['subgraphs']:
            self.sessions[sub['name']] = self._session(
                sub, providers, num_threads)
        self.stage_times: Dict[str, float] = {}
        self._voxel_buffer = None
        # reused from frame to frame (see _encoder_input / ScatterCanvas)
        self._enc_input: Optional[np.ndarray] = None
        self._enc_filled = 0  # pillar slots of _enc_input holding data
        self._canvas: Optional[ScatterCanvas] = None

    def _session(self, sub: dict, providers, num_threads):
        import onnxruntime as ort
        path = osp.join(self.deploy_dir, sub['file'])
        if sub['file'].endswith('.xmodel'):
            raise ManifestError(
                f'{path}: an xmodel (nndct export) runs on the board with '
                'VART after vai_c_xir compiles it; Pipeline runs the ONNX '
                'deploy folders of the builtin backend')
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

    def _decorate(self, voxels, num_points, coors) -> np.ndarray:
        """The pillar encoder's ``(1, C, num_voxels, P)`` input: decorated
        pillars, zero-padded to the fixed DPU shape, in a buffer reused from
        frame to frame (only the slots the last frame filled beyond this
        one's are zeroed)."""
        num = voxels.shape[0]
        if num > self.num_voxels:  # the subgraph will refuse it
            return decorate_pillars(voxels, num_points, coors,
                                    self.voxel_size, self.point_cloud_range,
                                    input_scale=self.input_scale,
                                    **self.decoration)
        shape = (1, self.input_scale.shape[0], self.num_voxels,
                 voxels.shape[1])
        if self._enc_input is None or self._enc_input.shape != shape:
            self._enc_input = np.zeros(shape, np.float32)
            self._enc_filled = 0
        x = decorate_pillars(voxels, num_points, coors, self.voxel_size,
                             self.point_cloud_range,
                             input_scale=self._enc_scale, out=self._enc_input,
                             **self.decoration)
        if self._enc_filled > num:
            x[:, :, num:self._enc_filled] = 0
        self._enc_filled = num
        if self.input_fix_pos is not None:
            quantize_input(x[:, :, :num], self.input_fix_pos, prescaled=True)
        return x

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

        pts = check_points(points, self.num_features,
                           drop_invalid=self.drop_invalid)
        lap('check_points')
        if self._voxel_buffer is None:  # reused: no fresh pages per frame
            self._voxel_buffer = np.zeros(
                (self.max_voxels, self.max_num_points, self.num_features),
                np.float32)
        voxels, num_points, coors = voxelize(
            pts, self.voxel_size, self.point_cloud_range,
            self.max_num_points, self.max_voxels,
            on_overflow=self.on_overflow, out=self._voxel_buffer)
        lap('voxelize')
        num = voxels.shape[0]
        if num == 0:
            self.stage_times = dict(times)
            return self.empty_result()
        x = self._decorate(voxels, num_points, coors)
        lap('decorate')
        enc = self.sessions['pillar_encoder']
        feats = enc.run(None, {enc.get_inputs()[0].name: x})[0]
        lap('pillar_encoder')
        if self._canvas is None or self._canvas.channels != feats.shape[1]:
            self._canvas = ScatterCanvas(feats.shape[1], self.grid_hw)
        # (1, C, num_voxels, 1): the first num slots are the pillars
        canvas = self._canvas(feats, coors)
        lap('scatter')
        bev = self.sessions['bev']
        outs = bev.run(None, {bev.get_inputs()[0].name: canvas})
        by_name = {o.name: v for o, v in zip(bev.get_outputs(), outs)}
        lap('bev')
        result = self.decoder(by_name[self.roles['cls_score']],
                              by_name[self.roles['bbox_pred']],
                              by_name[self.roles['dir_cls_pred']])
        lap('decode')
        self.stage_times = dict(times)
        return result
