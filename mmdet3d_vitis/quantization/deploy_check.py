"""Deploy check: the exported deploy folder against the PyTorch int8 model.

Run by ``tools/quant.py --quant_mode test --dump_xmodel`` right after the
export, on the first ``--deploy_check_frames`` frames of the test set:

* per DPU subgraph: the ONNX file run by onnxruntime vs the fake-quant
  module on the inputs that subgraph receives in the int8 model, per output
  in LSBs of the output's scale (max |delta|, share of differing elements),
  with the rounding ties that explain any difference
  (:func:`~.backends.onnx_export.deploy_check`);
* end to end: :class:`mmdet3d_vitis.deploy.Pipeline` on the frame's points
  vs the int8 model's ``predict`` (same boxes, IoU >= 0.99, ties in score
  order allowed: :func:`mmdet3d_vitis.deploy.detection_match.
  match_detections`).

The result is written to ``QUANT_DIR/deploy_check.json`` and summarized in
the quant report.
"""
import os.path as osp
from collections import OrderedDict
from typing import Dict, Sequence

import numpy as np
import torch

from ..errors import UserInputError
from ..fileio import atomic_write_json

__all__ = ['DEPLOY_CHECK_FILE', 'DeployCheckError', 'int8_detections',
           'run_deploy_check', 'format_deploy_check']

DEPLOY_CHECK_FILE = 'deploy_check.json'
# the bounds: <= 1 LSB per subgraph output, detections matched
MAX_LSB = 1


class DeployCheckError(UserInputError):
    """The deploy folder does not reproduce the PyTorch int8 model."""


def int8_detections(model, dataset, index: int) -> Dict[str, np.ndarray]:
    """``predict`` of ``model`` (a partitioned detector) on one frame as
    ``dict(bboxes, scores, labels)`` numpy arrays."""
    from mmengine.dataset import pseudo_collate
    batch = pseudo_collate([dataset[index]])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        pred = model.predict(data['inputs'], data['data_samples'])
    inst = pred[0].pred_instances_3d
    return dict(bboxes=inst.bboxes_3d.tensor.detach().cpu().numpy(),
                scores=inst.scores_3d.detach().cpu().numpy(),
                labels=inst.labels_3d.detach().cpu().numpy())


def frame_points(dataset, index: int) -> np.ndarray:
    """The points the detector gets for frame ``index`` (after the test
    pipeline: sweeps merged, ``use_dim`` applied)."""
    return dataset[index]['inputs']['points'].numpy()


def pad_to_shapes(args, shapes):
    """Zero-pad each input tensor to the exported (fixed) input shape, as
    the deploy Pipeline does (e.g. the pillar encoder's voxel dimension,
    ``num_voxels``); dims given as names or None are left alone."""
    out = []
    for i, a in enumerate(args):
        shape = shapes[i] if i < len(shapes) else None
        if isinstance(a, torch.Tensor) and shape and len(shape) == a.dim():
            pad = []
            for have, want in zip(reversed(a.shape), reversed(shape)):
                extra = want - have if isinstance(want, int) and want else 0
                if extra < 0:
                    raise DeployCheckError(
                        f'subgraph input {i}: shape {tuple(a.shape)} exceeds '
                        f'the exported shape {shape}')
                pad += [0, extra]
            if any(pad):
                a = torch.nn.functional.pad(a, pad)
        out.append(a)
    return tuple(out)


def on_input_grid(args, fix_pos):
    """The subgraph inputs as the deployed runtime hands them over: rounded
    onto their int8 grid on the CPU with the DPU's rounding
    (:func:`mmdet3d_vitis.deploy.glue.quantize_input`); the fake-quant
    model's input quantizer leaves them unchanged."""
    from ..deploy.glue import quantize_input
    out = []
    for i, a in enumerate(args):
        p = fix_pos[i] if i < len(fix_pos) else None
        if isinstance(a, torch.Tensor) and p is not None:
            a = torch.from_numpy(quantize_input(
                a.detach().cpu().numpy().astype(np.float32, copy=True),
                int(p)))
        out.append(a)
    return tuple(out)


def _nchw(shape, layout):
    if shape and layout == 'NHWC' and len(shape) == 4:
        return [shape[0], shape[3], shape[1], shape[2]]
    return shape


def run_deploy_check(qmodel, deploy_dir: str, dataset,
                     indices: Sequence[int], out_path: str = None,
                     strict: bool = True) -> dict:
    """Check ``deploy_dir`` (written from ``qmodel``) on ``indices``.

    Returns ``dict(frames, deploy_dir, subgraphs={name: merged LSB check},
    detections=[per-frame match], ok, max_abs_lsb)``; written atomically to
    ``out_path`` when given.  ``strict``: raise :class:`DeployCheckError`
    (after writing the file) when a bound does not hold.
    """
    from ..deploy import Pipeline, load_manifest
    from ..deploy.detection_match import match_detections
    from .backends.onnx_export import merge_checks
    from .quant_runner import collect_subgraph_inputs

    backend = qmodel.backend
    if not hasattr(backend, 'deploy_check'):
        raise UserInputError(
            f'the {backend.name} backend has no ONNX deploy check')
    indices = list(indices)
    manifest = load_manifest(deploy_dir)
    qmodel.use('quant')
    inputs = collect_subgraph_inputs(qmodel.model, dataset, indices)
    subgraphs = OrderedDict()
    for sub in manifest['subgraphs']:
        name = sub['name']
        scales = [o['scale'] for o in sub['outputs']]
        path = osp.join(deploy_dir, sub['file'])
        # the PyTorch subgraph's (NCHW) view of the exported input shapes
        shapes = [_nchw(t.get('shape'), t.get('layout'))
                  for t in sub['inputs']]
        fix_pos = [t.get('fix_pos') for t in sub['inputs']]
        checks = [backend.deploy_check(
            name, qmodel.qmods[name], path,
            on_input_grid(pad_to_shapes(args, shapes), fix_pos), scales)
                  for args in inputs[name]]
        subgraphs[name] = merge_checks(checks)
    pipeline = Pipeline(deploy_dir, num_threads=1)
    detections = []
    for index in indices:
        ref = int8_detections(qmodel.model, dataset, index)
        got = pipeline(frame_points(dataset, index))
        m = match_detections(ref, got)
        m['frame'] = int(index)
        detections.append(m)
    max_lsb = max((r['max_abs_lsb'] for c in subgraphs.values()
                   for r in c['vs_dpu']), default=0.0)
    result = OrderedDict(
        frames=indices, deploy_dir=osp.abspath(deploy_dir),
        max_abs_lsb=max_lsb,
        subgraphs=subgraphs, detections=detections,
        ok=max_lsb <= MAX_LSB and all(d['ok'] for d in detections))
    if out_path:
        atomic_write_json(out_path, result)
    print(format_deploy_check(result), flush=True)
    if strict and not result['ok']:
        raise DeployCheckError(
            f'deploy check failed for {deploy_dir} (max {max_lsb:g} LSB, '
            f'see {out_path or "the report above"})')
    return result


def format_deploy_check(result: dict) -> str:
    from .backends.onnx_export import format_report
    lines = [f'== deploy check on {len(result["frames"])} frame(s): '
             f'{"OK" if result["ok"] else "FAILED"}']
    for name, check in result['subgraphs'].items():
        lines.append(f'[{name}]')
        lines.extend('  ' + line for line in format_report(check).split(
            '\n')[:-1])
        lines.append(
            f'  {check["n_ties"]} ties, {check["n_round_differ"]} that '
            f'plain ONNX would round differently, {check["n_uncorrected"]} '
            'left uncorrected by the export')
    for d in result['detections']:
        lines.append(
            f'frame {d["frame"]}: {d["n_matched"]}/{d["n_ref"]} int8 '
            f'detections matched by the pipeline ({d["n_out"]} boxes), '
            f'min IoU {d["min_iou"]}, unmatched {d["unmatched_ref"]}/'
            f'{d["unmatched_out"]} (tie-unexplained {d["unexplained_ref"]}/'
            f'{d["unexplained_out"]})')
    return '\n'.join(lines)
