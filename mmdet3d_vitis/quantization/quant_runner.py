"""Post-training quantization of an mmdet3d detector, the Vitis AI zoo's way.

``tools/quant.py`` is a thin command line over :func:`run_quant`; every step
is a function of its own here so that tests and notebooks can call them.

The flow (the zoo's ``test.py --quant_mode ...`` for PointPillars)::

    cfg = load_quant_config(opts)                       # plugin + data checks
    detector = load_float_detector(cfg, checkpoint)     # support, ckpt checks
    qmodel = quantize_model(detector, backend)          # partition + wrap

``calib``
    Calibration frames come from the config's *train* split (as in the zoo),
    loaded with the *test* pipeline (no augmentation): ``calib_len`` frames,
    ``random`` (a seeded permutation: the same ``seed`` picks the same
    frames) or ``sequential``.  With fast finetune, the float inputs of
    every DPU subgraph on the first ``fft_len`` frames of the same ordering
    are collected first (forward pre-hooks on the float subgraphs) and
    handed to ``backend.fast_finetune`` before the calibration loop.  The
    loop runs the partitioned detector on each frame up to the head maps
    (``mode='tensor'``: decode + NMS do not touch the DPU subgraphs, so they
    are skipped), then ``backend.export_quant_config()`` writes the
    quantization state.  With the zoo's defaults (500 frames, 300 for fast
    finetune) the collected fast finetune inputs are held in memory: the
    BEV pseudo-image of every frame (64 x 400 x 400 floats, 41 MB, for
    the zoo mirror: 12 GB for 300 frames), so size ``fft_len`` to the
    memory at hand.
    Everything is written into a staging folder next to
    ``quant_dir`` and moved in at the end, together with ``calib.json``: a
    failed run leaves ``quant_dir`` as it was.
``test``
    The backend reads the state ``calib`` left in ``quant_dir`` (a clear
    :class:`QuantStateError` when there is none, before any evaluation;
    ``--backend auto`` takes the backend named in ``calib.json``, and a
    fast-finetuned calibration is tested with its fast finetune); then the
    float detector and the int8 (fake-quant) partitioned detector are both
    evaluated with the config's test dataloader and evaluator through
    mmengine's ``Runner`` test loop.  ``report.json`` (written
    atomically at the end) holds both summaries and their difference.
``float``
    Only the float partitioned detector is evaluated (it must equal the
    original); ``float.json`` holds its summary.
``inspect``
    The per-layer DPU/CPU table of the detector on the first test frame;
    ``inspect.json`` in ``quant_dir``.

Errors that come from the input (config, checkpoint, unsupported detector,
missing calibration, unavailable backend, bad option values) are
:class:`~mmdet3d_vitis.errors.UserInputError` s.
"""
import copy
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from torch import Tensor, nn

from ..checkpoint import check_checkpoint_matches
from ..config_utils import load_config
from ..errors import UserInputError
from ..fileio import staged_dir
from ..report import (atomic_write_json, format_summary,
                      summarize_nuscenes_metrics)
from ..version import __version__
from .backends import (BACKEND_CHOICES, BACKENDS, QuantBackend,
                       QuantStateError, get_backend)
from .backends.onnx_boundary import set_int8_boundaries
from .inspector import format_table, inspect_detector
from .partition import BEV, PILLAR_ENCODER, partition_detector
from .deploy_check import DEPLOY_CHECK_FILE, run_deploy_check
from .partitioned_detector import VitisPartitionedDetector

__all__ = [
    'CALIB_FILE', 'FLOAT_REPORT_FILE', 'INSPECT_FILE', 'QuantOptions',
    'QuantizedModel', 'REPORT_FILE', 'SAMPLE_METHODS', 'build_dataset',
    'calib_dataset_cfg', 'calibrate', 'collect_subgraph_inputs',
    'compare_summaries', 'evaluate', 'format_comparison', 'head_outputs',
    'load_float_detector', 'load_quant_config', 'quantize_model',
    'run_quant', 'select_indices', 'eval_dataset_cfg', 'DEPLOY_DIR',
    'deploy_manifest', 'export_deploy', 'load_test_model'
]

CALIB_FILE = 'calib.json'
REPORT_FILE = 'report.json'
FLOAT_REPORT_FILE = 'float.json'
INSPECT_FILE = 'inspect.json'
SAMPLE_METHODS = ('random', 'sequential')
QUANT_MODES = ('float', 'calib', 'test')
DEPLOY_DIR = 'deploy'


@dataclass
class QuantOptions:
    """What ``tools/quant.py`` takes (same names as its flags)."""
    config: str
    checkpoint: str
    quant_mode: str = 'calib'
    calib_len: int = 500
    calib_sample_method: str = 'random'
    seed: int = 0
    quant_dir: str = 'quantize_result'
    bitwidth: int = 8
    fast_finetune: bool = False
    fft_len: int = 300
    dump_xmodel: bool = False
    deploy_dir: Optional[str] = None
    deploy_check_frames: int = 3
    backend: str = 'auto'
    inspect: bool = False
    work_dir: Optional[str] = None
    cfg_options: Optional[dict] = field(default=None)

    def validate(self) -> None:
        """Option values, before any work is done."""
        if self.quant_mode not in QUANT_MODES:
            raise UserInputError(
                f'--quant_mode must be one of {", ".join(QUANT_MODES)}, got '
                f'{self.quant_mode!r}')
        if self.dump_xmodel and (self.quant_mode != 'test' or self.inspect):
            raise UserInputError(
                '--dump_xmodel needs --quant_mode test (it exports the '
                'calibrated model: run --quant_mode calib first, then '
                '--quant_mode test --dump_xmodel)')
        if (not isinstance(self.deploy_check_frames, int)
                or self.deploy_check_frames < 0):
            raise UserInputError(
                '--deploy_check_frames must be a number of frames >= 0, got '
                f'{self.deploy_check_frames!r}')
        if self.deploy_dir is not None and not self.dump_xmodel:
            raise UserInputError('--deploy_dir is only used with '
                                 '--dump_xmodel')
        if self.calib_sample_method not in SAMPLE_METHODS:
            raise UserInputError(
                '--calib_sample_method must be one of '
                f'{", ".join(SAMPLE_METHODS)}, got '
                f'{self.calib_sample_method!r}')
        if self.backend not in BACKEND_CHOICES:
            raise UserInputError(
                f'--backend must be one of {", ".join(BACKEND_CHOICES)}, got '
                f'{self.backend!r}')
        for flag, value in (('calib_len', self.calib_len),
                            ('fft_len', self.fft_len)):
            if not isinstance(value, int) or value < 1:
                raise UserInputError(
                    f'--{flag} must be a positive number of frames, got '
                    f'{value!r}')
        if (not isinstance(self.bitwidth, int) or isinstance(
                self.bitwidth, bool) or not 2 <= self.bitwidth <= 16):
            raise UserInputError(
                f'--bitwidth must be an int in [2, 16] (the DPU uses 8), '
                f'got {self.bitwidth!r}')
        if not self.quant_dir:
            raise UserInputError('--quant_dir must not be empty')


# ---------------------------------------------------------------------------
# config, data, model
# ---------------------------------------------------------------------------
def load_quant_config(opts: QuantOptions) -> Config:
    """The config with the plugin/data checks for the splits the mode
    reads (calib: train + test; otherwise test) and the default scope set
    (so datasets and transforms build)."""
    from mmengine.registry import init_default_scope
    splits = ('train', 'test') if (opts.quant_mode == 'calib'
                                   and not opts.inspect) else ('test', )
    cfg = load_config(opts.config, opts.cfg_options, splits=splits)
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    return cfg


def _unwrap_dataset(dataset: dict, split: str) -> dict:
    """Strip CBGS / Repeat / ClassBalanced wrappers (they resample)."""
    while isinstance(dataset, dict) and 'dataset' in dataset:
        dataset = dataset['dataset']
    if not isinstance(dataset, dict):
        raise UserInputError(
            f'{split}_dataloader.dataset is not a dataset config')
    return dataset


def _test_pipeline(cfg: Config) -> list:
    loader = cfg.get('test_dataloader')
    if not loader:
        raise UserInputError('the config has no test_dataloader')
    pipeline = _unwrap_dataset(loader['dataset'], 'test').get('pipeline')
    if not pipeline:
        raise UserInputError('the config has no test pipeline '
                             '(test_dataloader.dataset.pipeline)')
    return copy.deepcopy(pipeline)


def calib_dataset_cfg(cfg: Config) -> ConfigDict:
    """The train split's dataset with the test pipeline, in test mode.

    The zoo calibrates on training frames; the test pipeline makes them look
    like what the detector sees at inference (no augmentation, test-time
    sweeps), and test mode keeps every frame (no empty-GT filter).
    """
    loader = cfg.get('train_dataloader')
    if not loader:
        raise UserInputError(
            'the config has no train_dataloader: calibration frames come '
            'from the train split')
    pipeline = _test_pipeline(cfg)
    dataset = copy.deepcopy(loader['dataset'])
    if 'datasets' in dataset:  # ConcatDataset: each part
        parts = []
        for part in dataset['datasets']:
            part = copy.deepcopy(_unwrap_dataset(part, 'train'))
            part.update(pipeline=copy.deepcopy(pipeline), test_mode=True)
            parts.append(part)
        dataset['datasets'] = parts
        return ConfigDict(dataset)
    dataset = copy.deepcopy(_unwrap_dataset(dataset, 'train'))
    dataset.update(pipeline=pipeline, test_mode=True)
    return ConfigDict(dataset)


def eval_dataset_cfg(cfg: Config) -> ConfigDict:
    """The test split's dataset config (with its test pipeline)."""
    loader = cfg.get('test_dataloader')
    if not loader:
        raise UserInputError('the config has no test_dataloader')
    return ConfigDict(copy.deepcopy(loader['dataset']))


def build_dataset(dataset_cfg: dict):
    from mmdet3d.registry import DATASETS
    return DATASETS.build(dataset_cfg)


def select_indices(num_frames: int, length: int, method: str = 'random',
                   seed: int = 0) -> List[int]:
    """``min(length, num_frames)`` frame indices, sorted.

    ``random`` takes the first ``length`` of a permutation seeded by
    ``seed``, so a shorter length (fast finetune's ``fft_len``) picks a
    subset of a longer one (``calib_len``) and two runs pick the same.
    """
    if method not in SAMPLE_METHODS:
        raise UserInputError(
            f'sample method must be one of {SAMPLE_METHODS}, got {method!r}')
    if num_frames < 1:
        raise UserInputError('the calibration dataset has no frames')
    length = min(length, num_frames)
    if method == 'sequential':
        return list(range(length))
    order = np.random.RandomState(seed).permutation(num_frames)[:length]
    return sorted(int(i) for i in order)


def load_float_detector(cfg: Config, checkpoint: str) -> nn.Module:
    """The config's detector with ``checkpoint`` loaded, in eval mode.

    Checks, in this order and before any weights are read: the detector is
    one the DPU partition supports (:class:`UnsupportedModelError`), the
    checkpoint exists and fits it (:class:`CheckpointError`).
    """
    from mmdet3d.registry import MODELS
    from mmengine.runner import load_checkpoint
    detector = MODELS.build(copy.deepcopy(cfg.model))
    partition_detector(detector)  # raises UnsupportedModelError early
    check_checkpoint_matches(detector, checkpoint)
    load_checkpoint(detector, checkpoint, map_location='cpu', strict=True,
                    logger='silent')
    return detector.eval()


@dataclass
class QuantizedModel:
    """The float detector, its partition with the backend's subgraphs."""
    detector: nn.Module
    model: VitisPartitionedDetector
    backend: QuantBackend
    #: the float subgraphs (before ``set_subgraph``)
    float_subgraphs: Dict[str, nn.Module]
    #: what ``backend.wrap`` returned, by subgraph name
    qmods: Dict[str, nn.Module]

    def use(self, which: str = 'quant') -> 'QuantizedModel':
        """Run the ``'float'`` or the ``'quant'`` subgraphs."""
        mods = self.float_subgraphs if which == 'float' else self.qmods
        for name, module in mods.items():
            self.model.set_subgraph(name, module)
        return self


def quantize_model(detector: nn.Module, backend: QuantBackend,
                   install: bool = True,
                   pillar_input_range: Optional[Sequence[float]] = None
                   ) -> QuantizedModel:
    """Partition ``detector`` (weights loaded) and wrap each DPU subgraph.

    ``install`` puts the wrapped subgraphs in place right away; otherwise
    the model still runs the float ones (see :meth:`QuantizedModel.use`).
    ``pillar_input_range`` is the pillar encoder's per-channel input range
    (powers of two) that calibration chose (:func:`pillar_input_range`).
    """
    model = VitisPartitionedDetector(detector).eval()
    if pillar_input_range is not None:
        model.partition.set_pillar_input_scale(
            torch.tensor(pillar_input_range))
    float_subgraphs, qmods = {}, {}
    for name in model.subgraph_names:
        module = model.get_subgraph(name)
        float_subgraphs[name] = module
        qmods[name] = backend.wrap(name, module, model.example_inputs(name))
    qmodel = QuantizedModel(detector, model, backend, float_subgraphs, qmods)
    if install:
        qmodel.use('quant')
    return qmodel


# ---------------------------------------------------------------------------
# running frames
# ---------------------------------------------------------------------------
def _batch(dataset, index: int) -> dict:
    from mmengine.dataset import pseudo_collate
    return pseudo_collate([dataset[index]])


def head_outputs(model: nn.Module, batch: dict) -> Tuple[List[Tensor], ...]:
    """The head maps of ``model`` on a collated batch (no decode / NMS)."""
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        return model(**data, mode='tensor')


def _progress(indices: Sequence[int], title: str):
    from mmengine.utils import ProgressBar
    print(f'{title}: {len(indices)} frames', flush=True)
    bar = ProgressBar(len(indices), file=sys.stdout)
    for index in indices:
        yield index
        bar.update()
    sys.stdout.write('\n')
    sys.stdout.flush()


def collect_subgraph_inputs(model: VitisPartitionedDetector, dataset,
                            indices: Sequence[int]
                            ) -> Dict[str, List[Tuple[Tensor, ...]]]:
    """The inputs each DPU subgraph of ``model`` receives on the frames
    ``indices`` (forward pre-hooks on the subgraphs in place)."""
    inputs = {name: [] for name in model.subgraph_names}
    handles = []
    for name in model.subgraph_names:

        def hook(module, args, name=name):
            inputs[name].append(tuple(
                a.detach().clone() if isinstance(a, Tensor) else a
                for a in args))

        handles.append(
            model.get_subgraph(name).register_forward_pre_hook(hook))
    try:
        for index in _progress(indices, 'fast finetune inputs'):
            head_outputs(model, _batch(dataset, index))
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def pillar_input_range(detector: nn.Module, dataset,
                       indices: Sequence[int]) -> Optional[List[float]]:
    """Per-channel max |x| of the pillar encoder's input on ``indices``,
    rounded up to powers of two (``None`` without a pillar encoder)."""
    model = VitisPartitionedDetector(detector).eval()
    if PILLAR_ENCODER not in model.subgraph_names:
        return None
    max_abs = []

    def hook(module, args):
        max_abs.append(args[0].detach().abs().amax(dim=(0, 2, 3)))

    handle = model.get_subgraph(PILLAR_ENCODER).register_forward_pre_hook(
        hook)
    try:
        for index in _progress(indices, 'pillar input range'):
            head_outputs(model, _batch(dataset, index))
    finally:
        handle.remove()
    scale = model.partition.set_pillar_input_scale(
        torch.stack(max_abs).amax(dim=0))
    return (1.0 / scale).tolist()


def calibrate(qmodel: QuantizedModel, dataset, indices: Sequence[int],
              fft_indices: Optional[Sequence[int]] = None) -> str:
    """Fast finetune (if ``fft_indices``), calibrate on ``indices`` and
    export; returns the path of ``quant_info.json``."""
    model, backend = qmodel.model, qmodel.backend
    model.eval()
    if fft_indices:
        qmodel.use('float')
        inputs = collect_subgraph_inputs(model, dataset, fft_indices)
        qmodel.use('quant')
        for name, qmod in qmodel.qmods.items():
            print(f'fast finetune of DPU subgraph {name} on '
                  f'{len(inputs[name])} inputs', flush=True)
            backend.fast_finetune(name, qmod, inputs[name])
        del inputs
    else:
        qmodel.use('quant')
    for index in _progress(indices, 'calibration'):
        head_outputs(model, _batch(dataset, index))
    return backend.export_quant_config()


def _test_runner(cfg: Config, model: nn.Module, work_dir: str, name: str):
    """An mmengine Runner with only the config's test loop, for a built
    model (weights already in: nothing is loaded)."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.load_from = None
    return Runner(
        model=model,
        work_dir=work_dir,
        test_dataloader=cfg.get('test_dataloader'),
        test_cfg=cfg.get('test_cfg') or dict(type='TestLoop'),
        test_evaluator=cfg.get('test_evaluator'),
        default_hooks=cfg.get('default_hooks'),
        custom_hooks=cfg.get('custom_hooks'),
        launcher='none',
        env_cfg=cfg.get('env_cfg', dict(dist_cfg=dict(backend='nccl'))),
        log_processor=cfg.get('log_processor'),
        log_level=cfg.get('log_level', 'INFO'),
        visualizer=cfg.get('visualizer'),
        default_scope=cfg.get('default_scope', 'mmengine'),
        randomness=cfg.get('randomness', dict(seed=None)),
        experiment_name=name,
        cfg=cfg)


def _plain(value):
    """numpy scalars / tensors -> JSON numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, )):
        return value.item()
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    return value


def evaluate(cfg: Config, model: nn.Module, work_dir: str, name: str,
             summarize=summarize_nuscenes_metrics,
             what: str = 'model') -> Tuple[dict, dict]:
    """``(metrics, summarize(metrics))`` of ``model`` with the config's
    test loop."""
    print(f'== evaluating the {name} {what}', flush=True)
    runner = _test_runner(cfg, model, osp.join(work_dir, f'quant_{name}'),
                          f'quant_{name}')
    metrics = _plain(dict(runner.test()))
    return metrics, summarize(metrics)


def compare_summaries(ref: dict, other: dict) -> dict:
    """``other - ref`` for mAP, NDS, the error metrics and per-class AP."""
    delta = {
        k: other[k] - ref[k] for k in ref
        if k != 'per_class_AP' and k in other
    }
    delta['per_class_AP'] = {
        cls: other.get('per_class_AP', {})[cls] - ap
        for cls, ap in ref.get('per_class_AP', {}).items()
        if cls in other.get('per_class_AP', {})
    }
    return delta


def format_comparison(ref: dict, other: dict, delta: dict,
                      names=('float', 'int8')) -> str:
    """Side-by-side table of two summaries and their difference."""
    rows = [('', names[0], names[1], 'delta')]
    for key in ('mAP', 'NDS', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE'):
        if key in ref and key in other:
            rows.append((key, f'{ref[key]:.4f}', f'{other[key]:.4f}',
                         f'{delta[key]:+.4f}'))
    for cls, ap in ref.get('per_class_AP', {}).items():
        if cls in delta['per_class_AP']:
            rows.append((f'{cls} AP', f'{ap:.4f}',
                         f"{other['per_class_AP'][cls]:.4f}",
                         f"{delta['per_class_AP'][cls]:+.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return '\n'.join(
        '  '.join([r[0].ljust(widths[0])] +
                  [v.rjust(w) for v, w in zip(r[1:], widths[1:])])
        for r in rows)


# ---------------------------------------------------------------------------
# output folder handling
# ---------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _share(path: str) -> None:
    """Give ``path`` (and what is under it) the permissions a plain
    ``open`` / ``mkdir`` would (temporary files are created 0600)."""
    mask = _umask()
    if osp.isdir(path):
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                os.chmod(osp.join(root, name), 0o666 & ~mask)
    elif osp.isfile(path):
        os.chmod(path, 0o666 & ~mask)


def _write_json(path: str, data) -> None:
    atomic_write_json(path, data)
    _share(path)


class _Staging:
    """A temporary folder next to ``quant_dir`` whose entries replace those
    of ``quant_dir`` on :meth:`publish`; removed (with any parent folders it
    had to create) on failure."""

    def __init__(self, quant_dir: str):
        self.quant_dir = osp.abspath(quant_dir)
        parent = osp.dirname(self.quant_dir)
        self._created = []
        p = parent
        while not osp.isdir(p):
            self._created.append(p)
            p = osp.dirname(p)
        os.makedirs(parent, exist_ok=True)
        self.path = tempfile.mkdtemp(
            prefix=f'.{osp.basename(self.quant_dir)}.staging-', dir=parent)

    def publish(self) -> None:
        _share(self.path)
        if not osp.isdir(self.quant_dir):
            os.rename(self.path, self.quant_dir)
            return
        for entry in sorted(os.listdir(self.path)):
            src = osp.join(self.path, entry)
            dst = osp.join(self.quant_dir, entry)
            if osp.isdir(src) and osp.isdir(dst):
                old = tempfile.mkdtemp(prefix=f'.{entry}.old-',
                                       dir=self.quant_dir)
                os.rename(dst, osp.join(old, entry))
                os.rename(src, dst)
                shutil.rmtree(old, ignore_errors=True)
            else:
                if osp.isdir(dst):
                    shutil.rmtree(dst)
                os.replace(src, dst)
        shutil.rmtree(self.path, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        for p in self._created:  # innermost first
            try:
                os.rmdir(p)
            except OSError:
                break


# ---------------------------------------------------------------------------
# deploy folder (--dump_xmodel)
# ---------------------------------------------------------------------------
def _jsonable(value):
    """Config values -> plain JSON (ConfigDicts, tuples, numpy)."""
    return _plain(json.loads(json.dumps(
        value.to_dict() if hasattr(value, 'to_dict') else value,
        default=lambda v: v.tolist() if hasattr(v, 'tolist') else str(v))))


def _pipeline_transform(cfg: Config, type_name: str) -> Optional[dict]:
    """The first transform of the test pipeline of type ``type_name``
    (looking inside MultiScaleFlipAug3D)."""
    stack = list(_test_pipeline(cfg))
    while stack:
        t = stack.pop(0)
        if not isinstance(t, dict):
            continue
        if t.get('type') == type_name:
            return t
        stack = list(t.get('transforms', [])) + stack
    return None


def _onnx_shapes(path: str) -> Tuple[Dict[str, list], Dict[str, list]]:
    import onnx
    graph = onnx.load(path).graph

    def shapes(values):
        return {
            v.name: [d.dim_value if d.HasField('dim_value') else d.dim_param
                     for d in v.type.tensor_type.shape.dim]
            for v in values
        }

    return shapes(graph.input), shapes(graph.output)


def deploy_manifest(cfg: Config, qmodel: QuantizedModel,
                    exported: Dict[str, dict], files: Dict[str, str],
                    shapes: Dict[str, Tuple[dict, dict]],
                    source: Optional[dict] = None,
                    boundaries: Optional[Dict[str, list]] = None) -> dict:
    """``pipeline.json``'s content (see :mod:`mmdet3d_vitis.deploy.manifest`)
    for ``qmodel`` whose subgraphs were exported (``exported``: what
    ``export_onnx`` returned, ``files``: their file names, ``shapes``:
    their ONNX input / output shapes by name, ``boundaries``: per subgraph
    what :func:`~.backends.onnx_boundary.set_int8_boundaries` returned)."""
    from ..deploy.manifest import FORMAT, VERSION
    partition = qmodel.model.partition
    dec = partition.decoration
    head = partition.bbox_head
    detector = qmodel.detector
    head_attr = 'pts_bbox_head' if hasattr(detector,
                                           'pts_bbox_head') else 'bbox_head'
    head_cfg = _jsonable(cfg.model[head_attr])
    test_cfg = _jsonable(head.test_cfg)
    channels = int(dec.out_channels)
    num_features = channels - 3 * bool(dec.with_cluster_center) - 3 * bool(
        dec.with_voxel_center) - bool(dec.with_distance)
    load = _pipeline_transform(cfg, 'LoadPointsFromFile') or {}
    sweeps = _pipeline_transform(cfg, 'LoadPointsFromMultiSweeps')
    voxel_layer = partition.data_preprocessor.voxel_layer
    bev_c, bev_h, bev_w = partition.bev_shape()
    class_names = cfg.get('class_names') or cfg.test_dataloader.dataset.get(
        'metainfo', {}).get('classes')
    if not class_names:
        raise UserInputError('the config names no classes (class_names or '
                             'test_dataloader.dataset.metainfo.classes)')

    def tensors(name, kind):
        in_shapes, out_shapes = shapes[name]
        by_name = in_shapes if kind == 'inputs' else out_shapes
        form = {b['name']: b for b in (boundaries or {}).get(name, [])}
        return [dict(name=e['name'], shape=by_name.get(e['name']),
                     tensor=e['tensor'], fix_pos=e['fix_pos'],
                     scale=e['scale'],
                     dtype=form.get(e['name'], {}).get('dtype', 'float32'),
                     layout=form.get(e['name'], {}).get('layout', 'NCHW'))
                for e in exported[name][kind]]

    per_level = 3 if head.use_direction_classifier else 2
    roles = ('cls_score', 'bbox_pred', 'dir_cls_pred')[:per_level]
    bev_outputs = exported[BEV]['outputs']
    head_outputs_ = [dict(name=e['name'], role=roles[i % per_level],
                          level=i // per_level)
                     for i, e in enumerate(bev_outputs)]
    return dict(
        format=FORMAT,
        version=VERSION,
        model=dict(type=type(detector).__name__,
                   class_names=list(class_names)),
        points=dict(
            num_features=num_features,
            load_dim=load.get('load_dim'),
            use_dim=_jsonable(load.get('use_dim')),
            sweeps_num=None if sweeps is None else sweeps.get('sweeps_num'),
            sweeps_use_dim=None if sweeps is None else _jsonable(
                sweeps.get('use_dim')),
            note='points as the test pipeline hands them to the detector '
            '(after multi-sweep merging): num_features columns'),
        voxelization=dict(
            voxel_size=[float(v) for v in voxel_layer.voxel_size],
            point_cloud_range=[float(v)
                               for v in voxel_layer.point_cloud_range],
            max_num_points=int(voxel_layer.max_num_points),
            max_voxels=int(partition.max_voxels)),
        decoration=dict(
            with_cluster_center=bool(dec.with_cluster_center),
            with_voxel_center=bool(dec.with_voxel_center),
            with_distance=bool(dec.with_distance),
            channels=channels,
            input_scale=[float(v) for v in dec.input_scale.tolist()],
            num_voxels=int(shapes[PILLAR_ENCODER][0][
                exported[PILLAR_ENCODER]['inputs'][0]['name']][2])),  # NCHW
        scatter=dict(grid_hw=[int(bev_h), int(bev_w)], channels=int(bev_c)),
        subgraphs=[
            dict(name=name, file=files[name],
                 inputs=tensors(name, 'inputs'),
                 outputs=tensors(name, 'outputs'),
                 opset=exported[name].get('opset'))
            for name in (PILLAR_ENCODER, BEV)
        ],
        head=dict(
            type=type(head).__name__,
            num_classes=int(head.num_classes),
            anchor_generator=head_cfg.get('anchor_generator'),
            bbox_coder=dict(head_cfg.get('bbox_coder', {}),
                            code_size=int(head.box_code_size)),
            use_direction_classifier=bool(head.use_direction_classifier),
            dir_offset=float(head.dir_offset),
            dir_limit_offset=float(head.dir_limit_offset),
            loss_cls=dict(use_sigmoid=bool(head.use_sigmoid_cls)),
            outputs=head_outputs_),
        test_cfg=dict(
            score_thr=float(test_cfg.get('score_thr', 0.0)),
            nms_pre=int(test_cfg.get('nms_pre', -1)),
            nms_thr=float(test_cfg['nms_thr']),
            max_num=int(test_cfg['max_num']),
            use_rotate_nms=bool(test_cfg.get('use_rotate_nms', False))),
        source=dict(source or {}, mmdet3d_vitis=__version__,
                    created=time.strftime('%Y-%m-%dT%H:%M:%S')))


# The DPU's boundaries in the ONNX deploy files, (inputs, outputs) layout
# per subgraph, all int8: the pillar encoder takes the glue's pillars (NCHW:
# one channel plane after the other, as the decoration writes them) and
# returns NHWC rows, which the glue scatters into the BEV subgraph's NHWC
# canvas; the head maps come out NHWC (one row of values per anchor).
DEPLOY_BOUNDARIES = {PILLAR_ENCODER: ('NCHW', 'NHWC'), BEV: ('NHWC', 'NHWC')}


def _check_deployable(qmodel: QuantizedModel) -> None:
    partition = qmodel.model.partition
    names = qmodel.model.subgraph_names
    if names != [PILLAR_ENCODER, BEV]:
        raise UserInputError(
            f'--dump_xmodel supports PointPillars-type models (DPU subgraphs '
            f'{PILLAR_ENCODER}, {BEV}) only; this model has {names}')
    if getattr(partition.decoration, 'legacy', False):
        raise UserInputError(
            '--dump_xmodel: the deploy glue implements PillarFeatureNet with '
            'legacy=False only; this model uses legacy=True')
    if not (hasattr(qmodel.backend, 'export_onnx')
            or hasattr(qmodel.backend, 'export_xmodel')):
        raise UserInputError(
            f'--dump_xmodel: the {qmodel.backend.name} backend exports '
            'nothing')


def export_deploy(cfg: Config, qmodel: QuantizedModel, deploy_dir: str,
                  source: Optional[dict] = None) -> dict:
    """Write the deploy folder of ``qmodel`` (int8 state loaded): one file
    per DPU subgraph -- ``<name>_int.onnx`` (QDQ ONNX, builtin backend) or
    ``<name>_int.xmodel`` (nndct, needs XIR) -- and ``pipeline.json``.

    Staged in a temporary folder next to ``deploy_dir`` and renamed into
    place at the end (a failure leaves ``deploy_dir`` as it was; an existing
    one is replaced as a whole).  Returns the manifest.
    """
    from ..deploy.manifest import MANIFEST_FILE, validate_manifest
    _check_deployable(qmodel)
    head_attr = 'pts_bbox_head' if hasattr(qmodel.detector,
                                           'pts_bbox_head') else 'bbox_head'
    head_type = cfg.model[head_attr].get('type')
    if head_type != 'Anchor3DHead':
        raise UserInputError(f'--dump_xmodel supports Anchor3DHead, not '
                             f'{head_type}')
    deploy_dir = osp.abspath(deploy_dir)
    if osp.exists(deploy_dir) and not osp.isdir(deploy_dir):
        raise UserInputError(
            f'--deploy_dir {deploy_dir!r} exists and is not a folder')
    onnx = hasattr(qmodel.backend, 'export_onnx')
    with staged_dir(deploy_dir) as stage:
        exported, files, shapes, boundaries = {}, {}, {}, {}
        for name in qmodel.model.subgraph_names:
            files[name] = f'{name}_int.{"onnx" if onnx else "xmodel"}'
            path = osp.join(stage, files[name])
            print(f'exporting DPU subgraph {name} to {files[name]}',
                  flush=True)
            if onnx:  # builtin: QDQ ONNX with the DPU's int8 boundaries
                exported[name] = qmodel.backend.export_onnx(
                    name, qmodel.qmods[name],
                    qmodel.model.example_inputs(name), path)
                in_layout, out_layout = DEPLOY_BOUNDARIES[name]
                boundaries[name] = set_int8_boundaries(
                    path, {e['name']: in_layout
                           for e in exported[name]['inputs']},
                    {e['name']: out_layout
                     for e in exported[name]['outputs']})
                shapes[name] = _onnx_shapes(path)
            else:  # nndct: torch_quantizer.export_xmodel
                exported[name] = qmodel.backend.export_xmodel(
                    name, qmodel.float_subgraphs[name],
                    qmodel.model.example_inputs(name), stage)
                shapes[name] = exported[name]['shapes']
                # an xmodel's tensors are the DPU's: int8, NHWC
                boundaries[name] = [
                    dict(name=e['name'], dtype='int8', layout='NHWC')
                    for e in exported[name]['inputs'] +
                    exported[name]['outputs']]
        manifest = deploy_manifest(cfg, qmodel, exported, files, shapes,
                                   source, boundaries)
        validate_manifest(json.loads(json.dumps(manifest)), stage)
        atomic_write_json(osp.join(stage, MANIFEST_FILE), manifest)
    print(f'wrote the deploy folder {deploy_dir} '
          f'({", ".join(files.values())}, {MANIFEST_FILE})')
    return manifest


# ---------------------------------------------------------------------------
# the modes
# ---------------------------------------------------------------------------
def _settings(opts: QuantOptions) -> dict:
    keys = ('config', 'checkpoint', 'quant_mode', 'quant_dir', 'backend',
            'bitwidth', 'fast_finetune', 'calib_len', 'calib_sample_method',
            'seed', 'fft_len', 'cfg_options', 'dump_xmodel', 'deploy_dir')
    settings = {k: v for k, v in asdict(opts).items() if k in keys}
    return _plain(json.loads(json.dumps(settings, default=str)))


def _read_calib_json(quant_dir: str) -> Optional[dict]:
    path = osp.join(quant_dir, CALIB_FILE)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _work_dir(opts: QuantOptions, cfg: Config) -> str:
    return opts.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(opts.config))[0])


def run_inspect(opts: QuantOptions, cfg: Config, detector: nn.Module
                ) -> dict:
    dataset = build_dataset(eval_dataset_cfg(cfg))
    if len(dataset) == 0:
        raise UserInputError('the test split has no frames to inspect')
    points = dataset[0]['inputs']['points']
    report = inspect_detector(detector, points)
    print(format_table(report))
    out = report.to_dict()
    out.update(config=opts.config, checkpoint=opts.checkpoint,
               frame=dict(split='test', index=0,
                          num_points=int(points.shape[0])))
    _write_json(osp.join(opts.quant_dir, INSPECT_FILE), out)
    print(f'wrote {osp.join(opts.quant_dir, INSPECT_FILE)}')
    return out


def calib_frames(opts: QuantOptions, cfg: Config):
    """``(dataset, indices, fft_indices)``: the calibration split with the
    test pipeline, the frames calibrated on and those of fast finetune
    (None without it)."""
    dataset = build_dataset(calib_dataset_cfg(cfg))
    indices = select_indices(len(dataset), opts.calib_len,
                             opts.calib_sample_method, opts.seed)
    fft_indices = (select_indices(len(dataset), opts.fft_len,
                                  opts.calib_sample_method, opts.seed)
                   if opts.fast_finetune else None)
    return dataset, indices, fft_indices


def run_calib(opts: QuantOptions, cfg: Config, detector: nn.Module) -> dict:
    start = time.time()
    dataset, indices, fft_indices = calib_frames(opts, cfg)
    staging = _Staging(opts.quant_dir)
    try:
        backend = get_backend(opts.backend, quant_mode='calib',
                              output_dir=staging.path,
                              bitwidth=opts.bitwidth)
        # A few frames are enough to bound coordinates and intensities.
        input_range = pillar_input_range(detector, dataset, indices[:16])
        qmodel = quantize_model(detector, backend, install=False,
                                pillar_input_range=input_range)
        print(f'backend {backend.name}: DPU subgraphs '
              f'{", ".join(qmodel.model.subgraph_names)}', flush=True)
        calibrate(qmodel, dataset, indices, fft_indices)
        info = calib_record(opts, cfg, backend, dataset, indices,
                            fft_indices, start,
                            subgraphs=qmodel.model.subgraph_names,
                            pillar_input_range=input_range)
        publish_calib(staging, info)
    except BaseException:
        staging.discard()
        raise
    print(f'calibrated {len(indices)} frames in {info["seconds"]:.1f} s; '
          f'wrote {osp.join(opts.quant_dir, "quant_info.json")} and '
          f'{osp.join(opts.quant_dir, CALIB_FILE)}')
    return info


def calib_record(opts: QuantOptions, cfg: Config, backend, dataset,
                 indices: Sequence[int], fft_indices: Optional[Sequence[int]],
                 start: float, **fields) -> dict:
    """``calib.json``'s content: what ran (options, calibration and fast
    finetune frames of the train split, the backend's shift adjustments,
    time) plus the model-specific ``fields``."""
    return dict(
        config=opts.config,
        checkpoint=opts.checkpoint,
        backend=backend.name,
        bitwidth=opts.bitwidth,
        **fields,
        dataset=dict(split='train', ann_file=calib_dataset_cfg(cfg).get(
            'ann_file'), num_frames=len(dataset), pipeline='test'),
        calib_len=len(indices),
        calib_len_requested=opts.calib_len,
        calib_sample_method=opts.calib_sample_method,
        seed=opts.seed,
        indices=list(indices),
        fast_finetune=opts.fast_finetune,
        fft_len=len(fft_indices) if fft_indices else None,
        fft_indices=fft_indices,
        shift_adjustments=list(getattr(backend, 'adjustments', [])),
        cfg_options=_settings(opts)['cfg_options'],
        seconds=round(time.time() - start, 3),
        created=time.strftime('%Y-%m-%dT%H:%M:%S'),
        version=__version__)


def publish_calib(staging: '_Staging', info: dict) -> None:
    """Write ``calib.json`` into the staged quant folder and publish it
    (with what the backend wrote there)."""
    atomic_write_json(osp.join(staging.path, CALIB_FILE), info)
    staging.publish()


def test_backend(opts: QuantOptions, calib: Optional[dict]):
    """``(backend in test mode, fast_finetune)`` for the state ``calib``
    left in ``opts.quant_dir`` (``calib.json``'s content or None): the
    backend that calibrated when ``--backend auto``, and fast finetune when
    the calibration ran it."""
    fast_finetune = opts.fast_finetune
    if calib and calib.get('fast_finetune') and not fast_finetune:
        print(f'{opts.quant_dir} was calibrated with fast finetune: testing '
              'with its fast-finetuned parameters')
        fast_finetune = True
    backend_name = opts.backend
    if backend_name == 'auto' and calib and calib.get('backend') in BACKENDS:
        backend_name = calib['backend']  # the one that calibrated
    backend = get_backend(backend_name, quant_mode='test',
                          output_dir=opts.quant_dir, bitwidth=opts.bitwidth)
    return backend, fast_finetune


def load_test_model(opts: QuantOptions, detector: nn.Module
                    ) -> Tuple[QuantizedModel, Optional[dict], bool]:
    """The int8 model from the state ``calib`` left in ``opts.quant_dir``:
    ``(qmodel, calib.json's content or None, fast_finetune)``."""
    calib = _read_calib_json(opts.quant_dir)
    backend, fast_finetune = test_backend(opts, calib)
    try:
        # Loads (and checks) the calibration state before anything runs.
        qmodel = quantize_model(
            detector, backend,
            pillar_input_range=(calib or {}).get('pillar_input_range'))
        if fast_finetune:
            for name, qmod in qmodel.qmods.items():
                backend.fast_finetune(name, qmod, [])
    except QuantStateError as e:
        # the backends name their folder --output_dir; here it is
        raise QuantStateError(
            str(e).replace('--output_dir', '--quant_dir')) from e
    return qmodel, calib, fast_finetune


def _write_report(opts: QuantOptions, report: dict, work_dir: str,
                  start: float) -> dict:
    """QUANT_DIR/report.json of ``--quant_mode test``: ``report`` plus the
    settings, work dir, run time and version; returns it."""
    report.update(settings=_settings(opts), work_dir=work_dir,
                  seconds=round(time.time() - start, 3), version=__version__)
    path = osp.join(opts.quant_dir, REPORT_FILE)
    _write_json(path, report)
    print(f'wrote {path}')
    return report


def export_and_check(opts: QuantOptions, cfg: Config,
                     qmodel: QuantizedModel, source: dict
                     ) -> Tuple[str, Optional[dict]]:
    """``--dump_xmodel``: write the deploy folder of ``qmodel``, then its
    deploy check on ``--deploy_check_frames`` test frames
    (QUANT_DIR/deploy_check.json).  Returns ``(deploy folder, summary of
    the check or None)``."""
    backend = qmodel.backend
    deploy_dir = opts.deploy_dir or osp.join(opts.quant_dir, DEPLOY_DIR)
    check_path = osp.join(opts.quant_dir, DEPLOY_CHECK_FILE)
    if osp.exists(check_path):  # belongs to the folder being replaced
        os.remove(check_path)
    export_deploy(cfg, qmodel, deploy_dir, source=source)
    if not opts.deploy_check_frames:
        return osp.abspath(deploy_dir), None
    if not hasattr(backend, 'deploy_check'):
        print(f'{backend.name} backend: the xmodel export wrote its own '
              f'deploy-check data (deploy_check_data_int/) in {deploy_dir}; '
              'compare it on the board')
        return osp.abspath(deploy_dir), None
    dataset = build_dataset(eval_dataset_cfg(cfg))
    n = min(opts.deploy_check_frames, len(dataset))
    result = run_deploy_check(qmodel, deploy_dir, dataset, range(n),
                              out_path=check_path)
    return osp.abspath(deploy_dir), dict(
        file=osp.abspath(check_path), ok=result['ok'],
        frames=result['frames'], max_abs_lsb=result['max_abs_lsb'],
        share_differ={
            name: max((r['share_differ'] for r in c['vs_dpu']), default=0.0)
            for name, c in result['subgraphs'].items()},
        detections_matched=all(d['ok'] for d in result['detections']))


def run_test(opts: QuantOptions, cfg: Config, detector: nn.Module) -> dict:
    start = time.time()
    qmodel, calib, fast_finetune = load_test_model(opts, detector)
    backend = qmodel.backend
    deploy = check = None
    if opts.dump_xmodel:
        deploy, check = export_and_check(
            opts, cfg, qmodel, source=dict(_settings(opts), calib=calib))
    work_dir = _work_dir(opts, cfg)
    float_metrics, float_summary = evaluate(cfg, detector, work_dir, 'float')
    int8_metrics, int8_summary = evaluate(cfg, qmodel.model, work_dir,
                                          'int8')
    delta = compare_summaries(float_summary, int8_summary)
    print(f'== float vs int8 ({backend.name} backend, '
          f'{opts.bitwidth} bit{", fast finetune" if fast_finetune else ""})')
    if float_summary.get('per_class_AP') or 'mAP' in float_summary:
        print(format_comparison(float_summary, int8_summary, delta))
    else:
        print(json.dumps(dict(float=float_metrics, int8=int8_metrics),
                         indent=2))
    report = dict(
        float=float_summary,
        int8=int8_summary,
        delta=delta,
        metrics=dict(float=float_metrics, int8=int8_metrics),
        backend=backend.name,
        bitwidth=opts.bitwidth,
        fast_finetune=fast_finetune,
        subgraphs=qmodel.model.subgraph_names,
        calib=calib,
        deploy_dir=deploy,
        deploy_check=check)
    return _write_report(opts, report, work_dir, start)


def run_float(opts: QuantOptions, cfg: Config, detector: nn.Module) -> dict:
    backend = get_backend(opts.backend, quant_mode='float',
                          output_dir=opts.quant_dir, bitwidth=opts.bitwidth)
    qmodel = quantize_model(detector, backend)
    work_dir = _work_dir(opts, cfg)
    metrics, summary = evaluate(cfg, qmodel.model, work_dir,
                                'float_partitioned')
    if summary.get('per_class_AP') or 'mAP' in summary:
        print(format_summary(summary, '== float partitioned model'))
    report = dict(float_partitioned=summary, metrics=metrics,
                  backend=backend.name, subgraphs=qmodel.model.subgraph_names,
                  settings=_settings(opts), work_dir=work_dir,
                  version=__version__)
    path = osp.join(opts.quant_dir, FLOAT_REPORT_FILE)
    _write_json(path, report)
    print(f'wrote {path}')
    return report


def run_qat_test(opts: QuantOptions, cfg: Config, checkpoint: dict) -> dict:
    """``--quant_mode test`` of a quantization-aware training checkpoint
    (one :class:`~mmdet3d_vitis.hooks.DPUQATHook` saved): the int8 model
    is rebuilt from the checkpoint (its fix positions, no calibration and
    nothing read from ``--quant_dir``), exported with ``--dump_xmodel`` and
    evaluated; the float model it started from (``load_from`` of the QAT
    run, when that file is still there) is evaluated too for the
    comparison.  ``report.json`` goes to ``--quant_dir`` as usual."""
    from ..hooks.qat import load_qat_checkpoint, qat_state_of
    start = time.time()
    state = qat_state_of(checkpoint)
    if opts.quant_mode != 'test' or opts.inspect:
        raise UserInputError(
            f'{opts.checkpoint} is a quantization-aware training checkpoint: '
            'its fix positions are already trained, so only --quant_mode '
            'test (with --dump_xmodel to export) applies; calibrate / '
            'inspect the float checkpoint instead')
    if opts.backend not in ('auto', 'builtin'):
        raise UserInputError(
            f'{opts.checkpoint} was trained with the builtin backend\'s DPU '
            f'arithmetic; --backend {opts.backend} cannot test it')
    if opts.fast_finetune:
        raise UserInputError('--fast_finetune does not apply to a QAT '
                             'checkpoint')
    if int(state.get('bitwidth', 8)) != opts.bitwidth:
        raise UserInputError(
            f'{opts.checkpoint} was trained with bitwidth '
            f'{state.get("bitwidth")}, not --bitwidth {opts.bitwidth}')
    qmodel = load_qat_checkpoint(cfg, checkpoint, opts.checkpoint)
    deploy = check = None
    source = dict(_settings(opts), qat=dict(
        {k: v for k, v in state.items() if k not in ('histories', 'tensors')}))
    if opts.dump_xmodel:
        # the exported pipeline is checked against the QAT model in PyTorch
        deploy, check = export_and_check(opts, cfg, qmodel, source=source)
    work_dir = _work_dir(opts, cfg)
    float_ckpt = state.get('float_checkpoint')
    float_metrics = float_summary = delta = None
    if float_ckpt and osp.isfile(float_ckpt):
        try:
            detector = load_float_detector(cfg, float_ckpt)
        except UserInputError as e:
            print(f'not evaluating the float model {float_ckpt}: {e}')
        else:
            float_metrics, float_summary = evaluate(cfg, detector, work_dir,
                                                    'float')
    int8_metrics, int8_summary = evaluate(cfg, qmodel.model, work_dir,
                                          'int8')
    if float_summary is not None:
        delta = compare_summaries(float_summary, int8_summary)
        print('== float vs int8 (QAT, builtin backend)')
        if float_summary.get('per_class_AP') or 'mAP' in float_summary:
            print(format_comparison(float_summary, int8_summary, delta))
    elif int8_summary.get('per_class_AP') or 'mAP' in int8_summary:
        print(format_summary(int8_summary, '== int8 (QAT, builtin backend)'))
    report = dict(
        float=float_summary,
        int8=int8_summary,
        delta=delta,
        metrics=dict(float=float_metrics, int8=int8_metrics),
        backend='builtin',
        bitwidth=opts.bitwidth,
        fast_finetune=False,
        qat=source['qat'],
        subgraphs=qmodel.model.subgraph_names,
        calib=None,
        deploy_dir=deploy,
        deploy_check=check)
    return _write_report(opts, report, work_dir, start)


def run_quant(opts: QuantOptions) -> dict:
    """Run ``tools/quant.py`` with ``opts``; returns what it wrote as JSON
    (calib.json's, report.json's, float.json's or inspect.json's content).
    """
    opts.validate()  # before any work, --dump_xmodel included
    if osp.exists(opts.quant_dir) and not osp.isdir(opts.quant_dir):
        raise UserInputError(
            f'--quant_dir {opts.quant_dir!r} exists and is not a folder')
    # An unavailable backend (nndct outside the Vitis AI docker) fails now,
    # not after the model and data are loaded; creating one writes nothing.
    backend = get_backend(opts.backend, quant_mode='float',
                          output_dir=opts.quant_dir, bitwidth=opts.bitwidth)
    if opts.dump_xmodel and hasattr(backend, 'require_xir'):
        backend.require_xir()  # nndct's xmodel export needs Vitis AI's XIR
    cfg = load_quant_config(opts)
    from .segmenter_quant import is_segmenter_config, run_segmenter_quant
    if is_segmenter_config(cfg):  # the PointPainting camera segmenter
        return run_segmenter_quant(opts, cfg)
    from ..checkpoint import load_checkpoint_file
    from ..hooks.qat import qat_state_of
    # A quantization-aware training checkpoint holds the int8 model itself.
    # (A missing file is left to load_float_detector, which names an
    # unsupported detector before the checkpoint.)
    if osp.isfile(opts.checkpoint):
        checkpoint = load_checkpoint_file(opts.checkpoint)
        if qat_state_of(checkpoint) is not None:
            return run_qat_test(opts, cfg, checkpoint)
        del checkpoint
    detector = load_float_detector(cfg, opts.checkpoint)
    # No global no_grad: nndct's fast finetune trains; every forward of
    # ours runs under no_grad (head_outputs, mmengine's test loop).
    return run_mode(opts, cfg, detector, inspect=run_inspect,
                    calib=run_calib, test=run_test, float=run_float)


def run_mode(opts: QuantOptions, cfg: Config, model: nn.Module,
             **modes) -> dict:
    """``modes['inspect']`` with ``--inspect``, else the one named by
    ``--quant_mode`` (``calib`` / ``test`` / ``float``), on ``model``."""
    mode = 'inspect' if opts.inspect else opts.quant_mode
    return modes[mode](opts, cfg, model)
