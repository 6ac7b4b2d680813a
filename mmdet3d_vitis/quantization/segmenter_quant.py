"""``tools/quant.py`` for the PointPainting camera segmenter.

:func:`run_segmenter_quant` is what :func:`.quant_runner.run_quant` hands
a config whose model is a :class:`~mmdet3d_vitis.painting.segmenter.
VitisSemanticFPN` to (same options, same files in ``--quant_dir``).

The partition is one DPU subgraph, ``segmenter`` (:class:`SegmenterNet`):
the normalized image (the data preprocessor's ``(x - mean) / std`` stays on
the CPU, as the DPU runner's input scaling) through ResNet + FPN + the
Semantic FPN head to the stride-4 class logits.  Every op of it is a DPU op
the builtin backend knows: conv (BN folded) + ReLU, max-pool, residual and
FPN adds, the FPN's nearest 2x upsampling (keeps the scale of its input)
and the head's bilinear 2x upsampling (the DPU's bilinear ``Resize`` /
upsample, ``align_corners=False``; its output is re-quantized like an
activation).  On the CPU (:class:`VitisPartitionedSegmenter`): the bilinear
upsampling of the logits to the network input size, then to the mask size,
and the argmax (``predict``) or softmax (painting).

The DPU graph has a fixed input size: the one of the first image of the
split (the test pipeline's ``img_scale``); ``calib.json`` records it and
``test`` checks that the images still have it.

``calib``
    ``--calib_len`` images of the *train* split with the test pipeline
    (``random`` / ``sequential`` as for detectors), fast finetune (builtin:
    bias correction) on ``--fft_len`` of them with ``--fast_finetune``; the
    backend writes ``quant_info.json`` + its state, ``calib.json`` says
    what ran (staged and published like the detector flow).
``test``
    Float and int8 mIoU / per-class IoU with the config's test dataloader
    and evaluator (mmengine ``Runner`` test loop) -> ``report.json``.  With
    ``--dump_xmodel`` (builtin backend): ``segmenter_int.onnx`` (QDQ ONNX,
    :func:`.backends.onnx_export.export_subgraph_onnx`) and
    ``segmenter.json`` (pre- / post-processing) in the deploy folder (the
    ties after the bilinear 2x upsamplings rounded half up like the DPU:
    :func:`correct_resize_ties`), then
    the ONNX file on onnxruntime against the fake-quant subgraph on
    ``--deploy_check_frames`` test images, in LSBs of the logits' scale ->
    ``deploy_check.json`` (at most 1 LSB, else
    :class:`~.deploy_check.DeployCheckError`).
``float``
    The float partitioned segmenter (must equal the original) ->
    ``float.json``.
``--inspect``
    The ops of the DPU subgraph and their placement -> ``inspect.json``.
"""
import copy
import json
import os
import os.path as osp
import time
import warnings
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement, PixelData
from torch import Tensor, nn

from ..errors import UserInputError
from ..fileio import atomic_write_json, staged_dir
from ..painting.segmenter import fuse_levels
from ..version import __version__

__all__ = [
    'SEGMENTER', 'SEGMENTER_JSON', 'SegmenterNet', 'VitisPartitionedSegmenter',
    'is_segmenter_config', 'load_float_segmenter', 'segmenter_ops',
    'summarize_seg_metrics', 'run_segmenter_quant', 'calibrate_segmenter',
    'load_test_segmenter', 'export_segmenter', 'check_segmenter_export',
    'correct_resize_ties', 'predictions_from_logits'
]

#: name of the one DPU subgraph
SEGMENTER = 'segmenter'
#: pre- / post-processing of the exported subgraph, in the deploy folder
SEGMENTER_JSON = 'segmenter.json'
#: what stays on the CPU
CPU_STEPS = (
    'normalize (x - mean) / std (the DPU input scaling)',
    'bilinear upsampling of the stride-4 logits to the input size',
    'bilinear upsampling to the mask size, argmax (predict) / softmax '
    '(painting)')


def is_segmenter_config(cfg: Config) -> bool:
    """The config's model is a :class:`VitisSemanticFPN` (or subclass)."""
    from mmdet3d.registry import MODELS

    from ..painting.segmenter import VitisSemanticFPN
    model = cfg.get('model')
    if not isinstance(model, dict) or not isinstance(model.get('type'),
                                                     str):
        return False
    cls = MODELS.get(model['type'])
    return isinstance(cls, type) and issubclass(cls, VitisSemanticFPN)


# ---------------------------------------------------------------------------
# the partition
# ---------------------------------------------------------------------------
class SegmenterNet(nn.Module):
    """The DPU subgraph of a :class:`VitisSemanticFPN`: normalized images
    ``(B, 3, H, W)`` -> stride-4 logits ``(B, num_classes, H', W')``.

    Shares the segmenter's modules (backbone, neck, head).  The head's
    forward again, with the resizes of a fixed input size ``input_hw``
    decided here (the float head compares shapes at run time, which
    ``torch.fx`` cannot trace): the same arithmetic for that size.
    """

    def __init__(self, segmenter: nn.Module, input_hw: Sequence[int]):
        super().__init__()
        self.backbone = segmenter.backbone
        self.neck = segmenter.neck
        self.scale_heads = segmenter.head.scale_heads
        self.dropout = segmenter.head.dropout
        self.conv_seg = segmenter.head.conv_seg
        self.input_hw = tuple(int(v) for v in input_hw)
        if len(self.input_hw) != 2 or min(self.input_hw) < 1:
            raise UserInputError(f'invalid segmenter input size {input_hw}')
        # the pyramid shapes of this input size
        param = next(segmenter.parameters())
        modes = [(m, m.training) for m in self.modules()]  # shared modules
        self.eval()
        with torch.no_grad():
            feats = self.neck(self.backbone(
                torch.zeros((1, 3) + self.input_hw, device=param.device)))
        for m, training in modes:
            m.training = training
        size = tuple(feats[0].shape[-2:])
        self.level_sizes: List[Optional[Tuple[int, int]]] = []
        for i, (feat, stages) in enumerate(zip(feats, self.scale_heads)):
            hw = tuple(feat.shape[-2:])
            if i > 0:
                hw = tuple(v * 2**len(stages) for v in hw)
            self.level_sizes.append(None if hw == size else size)
        self.logits_hw = size

    def forward(self, x: Tensor) -> Tensor:
        return fuse_levels(self.neck(self.backbone(x)), self.scale_heads,
                           self.conv_seg, self.dropout, self.level_sizes)


def predictions_from_logits(logits: Tensor,
                            data_samples: Optional[list] = None) -> list:
    """``VitisSemanticFPN.predict``'s post-processing of input-size logits:
    ``pred_sem_seg`` per image at the size of its ``gt_sem_seg`` (bilinear
    upsampling, argmax) or at the input size."""
    if data_samples is None:
        data_samples = [BaseDataElement() for _ in range(len(logits))]
    for logit, sample in zip(logits, data_samples):
        logit = logit[None]
        if 'gt_sem_seg' in sample:
            size = sample.gt_sem_seg.data.shape[-2:]
            if tuple(size) != tuple(logit.shape[-2:]):
                logit = F.interpolate(logit, size=tuple(size),
                                      mode='bilinear', align_corners=False)
        sample.pred_sem_seg = PixelData(data=logit[0].argmax(0, True))
    return data_samples


class VitisPartitionedSegmenter(BaseModel):
    """A :class:`VitisSemanticFPN` run as its DPU subgraph
    (:class:`SegmenterNet`, swappable for the backend's module with
    :meth:`set_subgraph`) plus the CPU steps (module doc); ``tensor`` and
    ``predict`` modes like the segmenter's."""

    def __init__(self, segmenter: nn.Module, input_hw: Sequence[int]):
        super().__init__(data_preprocessor=segmenter.data_preprocessor)
        self.num_classes = segmenter.num_classes
        self.float_net = SegmenterNet(segmenter, input_hw)
        self.input_hw = self.float_net.input_hw
        self._subgraph: nn.Module = self.float_net

    @property
    def subgraph_names(self) -> List[str]:
        return [SEGMENTER]

    def _check_name(self, name: str) -> None:
        if name != SEGMENTER:
            raise UserInputError(f'no DPU subgraph {name!r}; the segmenter '
                                 f'has {self.subgraph_names}')

    def get_subgraph(self, name: str) -> nn.Module:
        self._check_name(name)
        return self._subgraph

    def set_subgraph(self, name: str, module: nn.Module) -> None:
        self._check_name(name)
        self._subgraph = module

    def example_inputs(self, name: str) -> Tuple[Tensor]:
        self._check_name(name)
        param = next(self.float_net.parameters())
        return (torch.zeros((1, 3) + self.input_hw, device=param.device), )

    def logits(self, inputs: Tensor) -> Tensor:
        """Input-size logits: the DPU subgraph, then the CPU upsampling."""
        if tuple(inputs.shape[-2:]) != self.input_hw:
            raise UserInputError(
                f'the segmenter\'s DPU graph takes {self.input_hw[0]} x '
                f'{self.input_hw[1]} images (fixed when it was built), got '
                f'{tuple(inputs.shape[-2:])}')
        out = self._subgraph(inputs)
        return F.interpolate(out, size=inputs.shape[-2:], mode='bilinear',
                             align_corners=False)

    def forward(self, inputs: Tensor, data_samples=None,
                mode: str = 'tensor'):
        if mode == 'tensor':
            return self.logits(inputs)
        if mode == 'predict':
            return predictions_from_logits(self.logits(inputs),
                                           data_samples)
        raise UserInputError(f'the partitioned segmenter runs tensor and '
                             f'predict modes, not {mode!r}')


def load_float_segmenter(cfg: Config, checkpoint: str) -> nn.Module:
    """The config's segmenter with ``checkpoint`` (checked first), eval."""
    from mmdet3d.registry import MODELS
    from mmengine.runner import load_checkpoint

    from ..checkpoint import check_checkpoint_matches
    model = MODELS.build(copy.deepcopy(cfg.model))
    check_checkpoint_matches(model, checkpoint)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                    logger='silent')
    return model.eval()


def _op_name(gm, node) -> str:
    if node.op == 'call_module':
        name = type(gm.get_submodule(node.target)).__name__
        mode = getattr(gm.get_submodule(node.target), 'mode', None)
        return f'{name}({mode})' if mode else name
    name = getattr(node.target, '__name__', str(node.target))
    if name == 'interpolate':
        return f'interpolate({node.kwargs.get("mode", "nearest")})'
    return name


def segmenter_ops(net: SegmenterNet) -> 'OrderedDict[str, int]':
    """Op counts of the DPU subgraph as the builtin backend traces it
    (BN not yet folded; shape look-ups left out)."""
    from .backends.graph import trace_subgraph
    gm = trace_subgraph(SEGMENTER, net, (torch.zeros((1, 3) +
                                                     net.input_hw), ))
    counts = Counter(
        _op_name(gm, n) for n in gm.graph.nodes
        if n.op in ('call_module', 'call_function', 'call_method')
        and getattr(n.target, '__name__', n.target) not in ('getattr',
                                                            'getitem'))
    return OrderedDict(sorted(counts.items()))


# ---------------------------------------------------------------------------
# data, metrics
# ---------------------------------------------------------------------------
def _images(model: VitisPartitionedSegmenter, dataset, index: int
            ) -> Tensor:
    """The normalized image batch (the DPU subgraph's input) of one image."""
    from .quant_runner import _batch
    with torch.no_grad():
        return model.data_preprocessor(_batch(dataset, index),
                                       False)['inputs']


def _input_hw(dataset, index: int = 0) -> Tuple[int, int]:
    if len(dataset) == 0:
        raise UserInputError('the split has no images')
    return tuple(int(v) for v in dataset[index]['inputs'].shape[-2:])


def summarize_seg_metrics(metrics: dict) -> dict:
    """``mIoU``, ``aAcc`` and ``per_class_IoU`` from the metric's dict."""
    summary = OrderedDict(per_class_IoU=OrderedDict())
    for key, value in metrics.items():
        if key in ('mIoU', 'aAcc'):
            summary[key] = float(value)
        elif key.startswith('IoU/'):
            summary['per_class_IoU'][key[len('IoU/'):]] = float(value)
    return summary


def compare_seg_summaries(ref: dict, other: dict) -> dict:
    """``other - ref`` for mIoU, aAcc and each class IoU."""
    delta = OrderedDict(
        (k, other[k] - ref[k]) for k in ('mIoU', 'aAcc')
        if k in ref and k in other)
    delta['per_class_IoU'] = OrderedDict(
        (c, other['per_class_IoU'][c] - v)
        for c, v in ref.get('per_class_IoU', {}).items()
        if c in other.get('per_class_IoU', {}))
    return delta


def format_seg_comparison(ref: dict, other: dict, delta: dict,
                          names=('float', 'int8')) -> str:
    rows = [('', names[0], names[1], 'delta')]
    for key in ('mIoU', 'aAcc'):
        if key in delta:
            rows.append((key, f'{ref[key]:.4f}', f'{other[key]:.4f}',
                         f'{delta[key]:+.4f}'))
    for cls, d in delta['per_class_IoU'].items():
        rows.append((f'IoU {cls}', f'{ref["per_class_IoU"][cls]:.4f}',
                     f'{other["per_class_IoU"][cls]:.4f}', f'{d:+.4f}'))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return '\n'.join(
        '  '.join([r[0].ljust(widths[0])] +
                  [v.rjust(w) for v, w in zip(r[1:], widths[1:])])
        for r in rows)


def evaluate_segmenter(cfg: Config, model: nn.Module, work_dir: str,
                       name: str) -> Tuple[dict, dict]:
    """``(metrics, summary)`` of ``model`` with the config's test loop."""
    from .quant_runner import evaluate
    return evaluate(cfg, model, work_dir, name,
                    summarize=summarize_seg_metrics, what='segmenter')


# ---------------------------------------------------------------------------
# calib / test
# ---------------------------------------------------------------------------
def _wrap(backend, model: VitisPartitionedSegmenter
          ) -> Tuple[nn.Module, List[str]]:
    """``backend.wrap`` of the DPU subgraph; also the builtin backend's
    warnings about ops it does not know as DPU ops (none expected)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        qmod = backend.wrap(SEGMENTER, model.float_net,
                            model.example_inputs(SEGMENTER))
    notes = [str(w.message) for w in caught
             if 'are not DPU ops' in str(w.message)]
    for w in caught:
        if 'are not DPU ops' not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename,
                                   w.lineno)
    for note in notes:
        print(f'WARNING: {note}', flush=True)
    return qmod, notes


def calibrate_segmenter(model: VitisPartitionedSegmenter, backend, dataset,
                        indices: Sequence[int],
                        fft_indices: Optional[Sequence[int]] = None
                        ) -> Tuple[nn.Module, List[str], str]:
    """Wrap, fast finetune (``fft_indices``), calibrate on ``indices`` and
    export: ``(qmod, non-DPU op notes, quant_info.json path)``."""
    from .quant_runner import _progress
    model.eval()
    qmod, notes = _wrap(backend, model)
    if fft_indices:
        inputs = [(_images(model, dataset, i), )
                  for i in _progress(fft_indices, 'fast finetune inputs')]
        print(f'fast finetune of DPU subgraph {SEGMENTER} on {len(inputs)} '
              'inputs', flush=True)
        backend.fast_finetune(SEGMENTER, qmod, inputs)
        del inputs
    model.set_subgraph(SEGMENTER, qmod)
    with torch.no_grad():
        for index in _progress(indices, 'calibration'):
            qmod(_images(model, dataset, index))
    return qmod, notes, backend.export_quant_config()


def run_segmenter_calib(opts, cfg: Config, segmenter: nn.Module) -> dict:
    from .backends import get_backend
    from .quant_runner import (CALIB_FILE, _Staging, calib_frames,
                               calib_record, publish_calib)
    start = time.time()
    dataset, indices, fft_indices = calib_frames(opts, cfg)
    input_hw = _input_hw(dataset, indices[0])
    staging = _Staging(opts.quant_dir)
    try:
        backend = get_backend(opts.backend, quant_mode='calib',
                              output_dir=staging.path,
                              bitwidth=opts.bitwidth)
        model = VitisPartitionedSegmenter(segmenter, input_hw)
        print(f'backend {backend.name}: DPU subgraph {SEGMENTER} '
              f'({input_hw[0]} x {input_hw[1]} image -> '
              f'{model.float_net.logits_hw[0]} x '
              f'{model.float_net.logits_hw[1]} logits)', flush=True)
        _, notes, _ = calibrate_segmenter(model, backend, dataset, indices,
                                          fft_indices)
        info = calib_record(
            opts, cfg, backend, dataset, indices, fft_indices, start,
            model='segmenter',
            subgraphs=[SEGMENTER],
            input_shape=[1, 3, *input_hw],
            logits_shape=[1, int(segmenter.num_classes),
                          *model.float_net.logits_hw],
            dpu_ops=segmenter_ops(model.float_net),
            non_dpu_ops=notes,
            cpu_steps=list(CPU_STEPS))
        publish_calib(staging, info)
    except BaseException:
        staging.discard()
        raise
    print(f'calibrated {len(indices)} images in {info["seconds"]:.1f} s; '
          f'wrote {osp.join(opts.quant_dir, "quant_info.json")} and '
          f'{osp.join(opts.quant_dir, CALIB_FILE)}')
    return info


def load_test_segmenter(opts, segmenter: nn.Module, input_hw
                        ) -> Tuple[VitisPartitionedSegmenter, object,
                                   nn.Module, Optional[dict], bool]:
    """The int8 segmenter from the state ``calib`` left in
    ``opts.quant_dir``: ``(model, backend, qmod, calib.json or None,
    fast_finetune)``; a :class:`QuantStateError` before anything runs
    when there is none or it belongs to another model or image size."""
    from .backends import QuantStateError
    from .quant_runner import _read_calib_json, test_backend
    calib = _read_calib_json(opts.quant_dir)
    if calib and calib.get('model') != 'segmenter':
        raise QuantStateError(
            f'{opts.quant_dir} holds the calibration of a detector '
            f'({calib.get("config")}), not of this segmenter: run '
            '--quant_mode calib with this config first')
    if calib and calib.get('input_shape') and list(
            calib['input_shape'][-2:]) != list(input_hw):
        raise QuantStateError(
            f'{opts.quant_dir} was calibrated for '
            f'{calib["input_shape"][-2]} x {calib["input_shape"][-1]} '
            f'images; the test split gives {input_hw[0]} x {input_hw[1]}: '
            're-run --quant_mode calib')
    backend, fast_finetune = test_backend(opts, calib)
    model = VitisPartitionedSegmenter(segmenter, input_hw)
    try:
        qmod, _ = _wrap(backend, model)
        if fast_finetune:
            backend.fast_finetune(SEGMENTER, qmod, [])
    except QuantStateError as e:
        raise QuantStateError(
            str(e).replace('--output_dir', '--quant_dir')) from e
    model.set_subgraph(SEGMENTER, qmod)
    return model.eval(), backend, qmod, calib, fast_finetune


def _bilinear2x_quantizers(qmod) -> List[Tuple[str, str, int]]:
    """``(input quantizer, output quantizer, output tensor)`` of each
    bilinear 2x upsampling (``align_corners=False``) of ``qmod`` (a
    builtin-backend subgraph) between two activation quantizers."""
    import torch.fx as fx
    gm = qmod.gm
    quantizers = {path.split('.act_quant.')[0]: key
                  for key, (kind, path) in qmod._tensors.items()
                  if kind in ('input', 'act')}
    found = []
    for node in gm.graph.nodes:
        if not (node.op == 'call_function' and node.target is F.interpolate
                and node.kwargs.get('mode') == 'bilinear'
                and node.kwargs.get('scale_factor') == 2
                and not node.kwargs.get('align_corners')):
            continue
        src = node.args[0] if node.args else None
        users = list(node.users)
        if (isinstance(src, fx.Node) and src.op == 'call_module'
                and src.target in quantizers and len(users) == 1
                and users[0].op == 'call_module'
                and users[0].target in quantizers):
            found.append((src.target, users[0].target,
                          quantizers[users[0].target]))
    return found


def correct_resize_ties(qmod, path: str) -> List[str]:
    """Round the exact .5 ties after the bilinear 2x upsamplings of the
    exported ``path`` half up, as the DPU (and the fake-quant module) do.

    The QDQ export (:mod:`.backends.onnx_export`) adds half a grid step
    before a ``QuantizeLinear`` where it knows the grid of the exact value
    (conv accumulators, adds); it does not for resizes.  A 2x bilinear
    upsampling with ``align_corners=False`` has the weights 1/4 and 3/4 per
    axis, so it maps the grid ``2**-p`` of its int8 input to ``2**-(p +
    4)`` exactly (float32 keeps it: 8 + 4 bits); the same half-step ``Add``
    is inserted before the ``QuantizeLinear`` of its output here.  Rewrites
    ``path`` (checked with ``onnx.checker``); returns the corrected tensors.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from .backends.onnx_export import MAX_TIE_SHIFT
    from ..fileio import atomic_write
    pos = qmod.fix_positions()
    pairs = _bilinear2x_quantizers(qmod)
    if not pairs:
        return []
    model = onnx.load(path)
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    corrected, nodes = [], list(graph.node)
    for src, dst, key in pairs:
        src_key = next(k for k, (_, p) in qmod._tensors.items()
                       if p.split('.act_quant.')[0] == src)
        grid = pos[src_key] + 4
        if not 0 < grid - pos[key] <= MAX_TIE_SHIFT:
            continue
        q = next((n for n in nodes if n.op_type == 'QuantizeLinear'
                  and n.name.startswith(f'/{dst}/')), None)
        resize = producer.get(q.input[0]) if q is not None else None
        dq = producer.get(resize.input[0]) if resize is not None else None
        if (resize is None or resize.op_type != 'Resize' or dq is None
                or not dq.name.startswith(f'/{src}/')):
            raise RuntimeError(f'{key}: the exported graph has no Resize '
                               'between its quantizers')
        const = f'{q.name}_tie_offset'
        added = f'{q.name}_tie_offset_add'
        offset = numpy_helper.from_array(
            np.array(2.0**-(grid + 1), dtype=np.float32), const + '_value')
        new = [helper.make_node('Constant', [], [const], name=const,
                                value=offset),
               helper.make_node('Add', [q.input[0], const], [added],
                                name=added)]
        q.input[0] = added
        i = nodes.index(q)
        nodes[i:i] = new
        corrected.append(key)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return corrected


def export_segmenter(model: VitisPartitionedSegmenter, backend,
                     qmod: nn.Module, deploy_dir: str,
                     class_names: Sequence[str],
                     source: Optional[dict] = None) -> dict:
    """Write ``segmenter_int.onnx`` (QDQ ONNX of the calibrated subgraph,
    checked with ``onnx.checker``) and ``segmenter.json`` to
    ``deploy_dir`` (staged, replaced as a whole).  Returns the content of
    ``segmenter.json``."""
    import onnx
    if not hasattr(backend, 'export_onnx'):
        raise UserInputError(
            f'--dump_xmodel: the {backend.name} backend has no ONNX export '
            'for the segmenter (use --backend builtin)')
    deploy_dir = osp.abspath(deploy_dir)
    if osp.exists(deploy_dir) and not osp.isdir(deploy_dir):
        raise UserInputError(
            f'--deploy_dir {deploy_dir!r} exists and is not a folder')
    with staged_dir(deploy_dir) as stage:
        file = f'{SEGMENTER}_int.onnx'
        print(f'exporting DPU subgraph {SEGMENTER} to {file}', flush=True)
        exported = backend.export_onnx(SEGMENTER, qmod,
                                       model.example_inputs(SEGMENTER),
                                       osp.join(stage, file))
        tie_corrected = correct_resize_ties(qmod, osp.join(stage, file))
        onnx.checker.check_model(osp.join(stage, file), full_check=True)
        pre = model.data_preprocessor
        manifest = OrderedDict(
            model='VitisSemanticFPN',
            file=file,
            opset=exported.get('opset'),
            inputs=exported['inputs'],
            outputs=exported['outputs'],
            input_shape=[1, 3, *model.input_hw],
            logits_shape=[1, model.num_classes,
                          *model.float_net.logits_hw],
            mean=[float(v) for v in pre.mean.reshape(-1).tolist()],
            std=[float(v) for v in pre.std.reshape(-1).tolist()],
            channel_order='RGB',
            class_names=list(class_names),
            cpu_steps=list(CPU_STEPS),
            n_quantize_linear=exported['n_quantize_linear'],
            n_dequantize_linear=exported['n_dequantize_linear'],
            resize_tie_corrected=tie_corrected,
            source=dict(source or {}, mmdet3d_vitis=__version__,
                        created=time.strftime('%Y-%m-%dT%H:%M:%S')))
        atomic_write_json(osp.join(stage, SEGMENTER_JSON), manifest)
    print(f'wrote the deploy folder {deploy_dir} ({file}, {SEGMENTER_JSON})')
    return manifest


def check_segmenter_export(model: VitisPartitionedSegmenter, backend,
                           qmod: nn.Module, deploy_dir: str, dataset,
                           indices: Sequence[int], out_path: str) -> dict:
    """onnxruntime on the exported file vs the fake-quant subgraph on the
    images ``indices`` (inputs rounded onto the input grid as the runtime
    hands them over), in LSBs of the logits' scale; written to
    ``out_path``; a :class:`DeployCheckError` above 1 LSB."""
    from .backends.onnx_export import format_report, merge_checks
    from .deploy_check import MAX_LSB, DeployCheckError, on_input_grid
    with open(osp.join(deploy_dir, SEGMENTER_JSON)) as f:
        manifest = json.load(f)
    path = osp.join(deploy_dir, manifest['file'])
    scales = [o['scale'] for o in manifest['outputs']]
    fix_pos = [t['fix_pos'] for t in manifest['inputs']]
    checks = [backend.deploy_check(
        SEGMENTER, qmod, path,
        on_input_grid((_images(model, dataset, i), ), fix_pos), scales)
        for i in indices]
    merged = merge_checks(checks)
    max_lsb = max((r['max_abs_lsb'] for r in merged['vs_dpu']), default=0.0)
    result = OrderedDict(frames=list(indices),
                         deploy_dir=osp.abspath(deploy_dir),
                         max_abs_lsb=max_lsb,
                         subgraphs=OrderedDict([(SEGMENTER, merged)]),
                         ok=max_lsb <= MAX_LSB)
    atomic_write_json(out_path, result)
    print(format_report(merged, names=['logits']), flush=True)
    if not result['ok']:
        raise DeployCheckError(
            f'deploy check failed for {deploy_dir} (max {max_lsb:g} LSB, '
            f'see {out_path})')
    return result


def run_segmenter_test(opts, cfg: Config, segmenter: nn.Module) -> dict:
    from .deploy_check import DEPLOY_CHECK_FILE
    from .quant_runner import (DEPLOY_DIR, _settings, _work_dir,
                               _write_report, build_dataset, eval_dataset_cfg)
    start = time.time()
    dataset = build_dataset(eval_dataset_cfg(cfg))
    model, backend, qmod, calib, fast_finetune = load_test_segmenter(
        opts, segmenter, _input_hw(dataset))
    deploy = check = None
    if opts.dump_xmodel:
        deploy = opts.deploy_dir or osp.join(opts.quant_dir, DEPLOY_DIR)
        check_path = osp.join(opts.quant_dir, DEPLOY_CHECK_FILE)
        if osp.exists(check_path):  # belongs to the folder being replaced
            os.remove(check_path)
        export_segmenter(model, backend, qmod, deploy,
                         dataset.metainfo.get('classes') or [],
                         source=dict(_settings(opts), calib=calib))
        deploy = osp.abspath(deploy)
        n = min(opts.deploy_check_frames, len(dataset))
        if n:
            result = check_segmenter_export(model, backend, qmod, deploy,
                                            dataset, range(n), check_path)
            check = dict(file=osp.abspath(check_path), ok=result['ok'],
                         frames=result['frames'],
                         max_abs_lsb=result['max_abs_lsb'])
    work_dir = _work_dir(opts, cfg)
    float_metrics, float_summary = evaluate_segmenter(cfg, segmenter,
                                                      work_dir, 'float')
    int8_metrics, int8_summary = evaluate_segmenter(cfg, model, work_dir,
                                                    'int8')
    delta = compare_seg_summaries(float_summary, int8_summary)
    print(f'== float vs int8 segmenter ({backend.name} backend, '
          f'{opts.bitwidth} bit{", fast finetune" if fast_finetune else ""})')
    print(format_seg_comparison(float_summary, int8_summary, delta))
    report = dict(
        model='segmenter',
        float=float_summary,
        int8=int8_summary,
        delta=delta,
        metrics=dict(float=float_metrics, int8=int8_metrics),
        backend=backend.name,
        bitwidth=opts.bitwidth,
        fast_finetune=fast_finetune,
        subgraphs=[SEGMENTER],
        input_shape=[1, 3, *model.input_hw],
        cpu_steps=list(CPU_STEPS),
        calib=calib,
        deploy_dir=deploy,
        deploy_check=check)
    return _write_report(opts, report, work_dir, start)


def run_segmenter_float(opts, cfg: Config, segmenter: nn.Module) -> dict:
    from .quant_runner import (FLOAT_REPORT_FILE, _settings, _work_dir,
                               _write_json, build_dataset, eval_dataset_cfg)
    model = VitisPartitionedSegmenter(
        segmenter, _input_hw(build_dataset(eval_dataset_cfg(cfg)))).eval()
    work_dir = _work_dir(opts, cfg)
    metrics, summary = evaluate_segmenter(cfg, model, work_dir,
                                          'float_partitioned')
    print(f'== float partitioned segmenter: mIoU {summary.get("mIoU")}')
    report = dict(model='segmenter', float_partitioned=summary,
                  metrics=metrics, subgraphs=[SEGMENTER],
                  settings=_settings(opts), work_dir=work_dir,
                  version=__version__)
    path = osp.join(opts.quant_dir, FLOAT_REPORT_FILE)
    _write_json(path, report)
    print(f'wrote {path}')
    return report


def run_segmenter_inspect(opts, cfg: Config, segmenter: nn.Module) -> dict:
    from .quant_runner import (INSPECT_FILE, _write_json, build_dataset,
                               eval_dataset_cfg)
    input_hw = _input_hw(build_dataset(eval_dataset_cfg(cfg)))
    net = SegmenterNet(segmenter, input_hw).eval()
    ops = segmenter_ops(net)
    lines = [f'DPU subgraph {SEGMENTER}: {input_hw[0]} x {input_hw[1]} '
             f'image -> {net.logits_hw[0]} x {net.logits_hw[1]} logits']
    lines += [f'  DPU  {op:<28s} x{n}' for op, n in ops.items()]
    lines += [f'  CPU  {step}' for step in CPU_STEPS]
    print('\n'.join(lines))
    out = dict(model='segmenter', config=opts.config,
               checkpoint=opts.checkpoint, subgraphs=[SEGMENTER],
               input_shape=[1, 3, *input_hw],
               logits_shape=[1, int(segmenter.num_classes), *net.logits_hw],
               dpu_ops=ops, cpu_steps=list(CPU_STEPS))
    _write_json(osp.join(opts.quant_dir, INSPECT_FILE), out)
    print(f'wrote {osp.join(opts.quant_dir, INSPECT_FILE)}')
    return out


def run_segmenter_quant(opts, cfg: Config) -> Dict:
    """:func:`.quant_runner.run_quant` for a segmenter config (options
    already validated, config loaded): calib, test, float or inspect."""
    from .quant_runner import run_mode
    segmenter = load_float_segmenter(cfg, opts.checkpoint)
    return run_mode(opts, cfg, segmenter, inspect=run_segmenter_inspect,
                    calib=run_segmenter_calib, test=run_segmenter_test,
                    float=run_segmenter_float)
