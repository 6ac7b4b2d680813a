"""Quantization-aware training (QAT) of the DPU subgraphs as an mmengine hook.

Config use (see ``configs/pointpillars/*_qat.py``)::

    load_from = 'float.pth'          # the float detector to start from
    custom_hooks = [dict(type='DPUQATHook', backend='auto', calib_len=100,
                         freeze_observers_after=200)]

What the hook does, in mmengine's order of events:

``before_run``
    Refuses (:class:`UnsupportedModelError`) a model the DPU partition
    cannot split, or a distributed / wrapped model; an unavailable backend
    is refused when the hook is built (:class:`BackendUnavailableError`).
``after_load_checkpoint`` (``load_from`` / ``--resume``)
    A float checkpoint is left to mmengine.  A QAT checkpoint (one holding
    ``checkpoint['dpu_qat']``, written by this hook) makes the hook build
    the quantized structure *first* (:func:`build_qat_model`: the same
    partition and DPU arithmetic as ``tools/quant.py``, fix positions unset)
    and put it in place of the runner's model, so that mmengine then loads
    the QAT weights and fix positions into it: no recalibration.  The
    optimizer is pointed at the new parameters before mmengine loads its
    state (``--resume``).
``before_train``
    From a float model: partition the detector (weights of ``load_from``),
    find the pillar encoder's input range and calibrate the builtin
    backend's fake-quant subgraphs on ``calib_len`` frames of the train
    split with the test pipeline -- exactly ``tools/quant.py --quant_mode
    calib`` -- then replace the runner's model by the
    :class:`VitisPartitionedDetector` running those subgraphs.  Training
    (its ``loss``) and validation (its ``predict``: the int8 metrics) both
    run the fake-quant model.  The existing optimizer object (its
    hyper-parameters, and the parameter schedulers bound to it) is kept;
    its first parameter group now holds the quantized subgraphs' weights
    and biases (other groups are left empty; their state is reset).
``freeze_observers_after`` (iterations of QAT)
    Until then the activation fix positions keep collecting (the modal
    diffs position over the calibration frames and every training batch)
    and the weight / bias fix positions are derived again from the
    changing weights at every iteration; at that iteration all of them are
    frozen and the DPU shifter limits applied (``adjust_shifts``), as the
    end of calibration does.  0 freezes them right after calibration
    (plain weight QAT on the PTQ ranges).  Validation and checkpoints in
    between use the current positions with the shifter limits applied.
``freeze_bn_after``
    The builtin backend folds every BatchNorm into its convolution when it
    builds the DPU arithmetic (what the DPU runs), so BN statistics are
    frozen (folded) from the first QAT iteration: only 0 / None is
    accepted.  Training BN statistics under QAT would need un-folded
    conv + BN quant layers, which the builtin backend does not implement.
``before_save_checkpoint``
    Adds ``checkpoint['dpu_qat']`` (backend, bit width, pillar input range,
    subgraph tensors, frozen flag, the activation histories while not yet
    frozen, where it started from).  ``tools/test.py CONFIG QAT_CKPT``
    evaluates the int8 model and ``tools/quant.py CONFIG QAT_CKPT
    --quant_mode test --dump_xmodel`` exports it (both build it with
    :func:`load_qat_checkpoint`, no calibration).

Fix positions are powers of two set by the DPU's ``diffs`` search, not
learned: brevitas' learned power-of-two scales round a learned log2 scale,
which is not the DPU's fix-position arithmetic (nndct's own QAT learns
them with its own quantizers, see the nndct backend).

With the nndct backend (``backend='nndct'``, or ``'auto'`` inside the
Vitis AI docker), each DPU subgraph is wrapped by ``pytorch_nndct``'s
``QatProcessor(...).trainable_model()`` (its own calibration and learned
ranges) and ``to_deployable`` writes ``<work_dir>/qat_nndct/<subgraph>``
after training; resuming such a run and testing / exporting its checkpoints
with this plugin's tools are not implemented (a clear error).
"""
import copy
import os.path as osp
import time
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional

import torch
from mmdet3d.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint_file
from ..errors import UserInputError
from ..version import __version__
from ..quantization.backends import (BuiltinBackend, QuantStateError,
                                     get_backend)
from ..quantization.partition import (PILLAR_ENCODER, UnsupportedModelError,
                                      partition_detector)
from ..quantization.partitioned_detector import VitisPartitionedDetector

__all__ = [
    'QAT_KEY', 'QAT_FORMAT', 'DPUQATHook', 'build_qat_model',
    'load_qat_checkpoint', 'qat_state_of', 'ensure_qat_hook', 'run_qat'
]

#: top-level checkpoint key of the quantization state
QAT_KEY = 'dpu_qat'
QAT_FORMAT = 1


def qat_state_of(checkpoint: dict) -> Optional[dict]:
    """The hook's quantization state in a loaded checkpoint, else None."""
    state = checkpoint.get(QAT_KEY) if isinstance(checkpoint, dict) else None
    return state if isinstance(state, dict) else None


def _check_state(state: dict, source: str = 'the checkpoint') -> None:
    if state.get('format') != QAT_FORMAT:
        raise QuantStateError(
            f'{source} holds QAT state format {state.get("format")!r}; this '
            f'version of mmdet3d_vitis reads format {QAT_FORMAT}')
    if state.get('backend') != 'builtin':
        raise QuantStateError(
            f'{source} was quantization-aware trained with the '
            f'{state.get("backend")!r} backend; only builtin-backend QAT '
            'checkpoints can be resumed, tested or exported by '
            'mmdet3d_vitis (use nndct\'s to_deployable output instead)')


def _device_of(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device('cpu')


def _qmods(model: VitisPartitionedDetector) -> 'OrderedDict[str, nn.Module]':
    return OrderedDict(
        (name, model.get_subgraph(name)) for name in model.subgraph_names)


def build_qat_model(detector: nn.Module, state: dict,
                    source: str = 'the checkpoint'):
    """The quantized structure a QAT checkpoint's state dict loads into.

    ``detector`` is the config's float detector (its weights do not matter:
    the QAT state dict replaces every quantized weight); returns a
    :class:`~mmdet3d_vitis.quantization.quant_runner.QuantizedModel` whose
    ``model`` runs the builtin backend's subgraphs with unset fix
    positions (load the state dict next) and whose backend, in test mode,
    exports them (``float_subgraphs`` is empty: there is no float model in
    a QAT checkpoint).
    """
    from ..quantization.quant_runner import QuantizedModel
    _check_state(state, source)
    model = VitisPartitionedDetector(detector).eval()
    if model.subgraph_names != list(state['subgraphs']):
        raise QuantStateError(
            f'{source} was trained with DPU subgraphs {state["subgraphs"]}, '
            f'the config\'s model has {model.subgraph_names}')
    input_range = state.get('pillar_input_range')
    if input_range is not None:
        model.partition.set_pillar_input_scale(torch.tensor(input_range))
    backend = BuiltinBackend(quant_mode='test', output_dir='qat',
                             bitwidth=int(state['bitwidth']),
                             device=_device_of(detector))
    qmods = OrderedDict()
    for name in model.subgraph_names:
        qmod = backend.build(name, model.get_subgraph(name),
                             model.example_inputs(name))
        stored = [list(t) for t in state['tensors'][name]]
        own = [[k, v] for k, v in qmod.tensors.items()]
        if stored != own:
            raise QuantStateError(
                f'the quantized tensors of DPU subgraph {name!r} in {source} '
                'do not match the config\'s model (another model or '
                'config?)')
        model.set_subgraph(name, qmod)
        qmods[name] = qmod
    return QuantizedModel(detector, model, backend, {}, qmods)


def _check_state_dict(model: nn.Module, state_dict: dict,
                      source: str) -> None:
    """mmengine only warns about missing keys: refuse a mismatch."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {(k[7:] if k.startswith('module.') else k): tuple(v.shape)
              for k, v in state_dict.items() if hasattr(v, 'shape')}
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = sorted(k for k in set(own) & set(theirs) if own[k] != theirs[k])
    if missing or unexpected or shapes:
        first = (missing or unexpected or shapes)[0]
        raise CheckpointError(
            f'{source} does not match the quantized model built from the '
            f'config ({len(missing)} missing, {len(unexpected)} unexpected, '
            f'{len(shapes)} of another shape; e.g. {first})')


def load_qat_checkpoint(cfg, checkpoint, source: Optional[str] = None):
    """The int8 model of a QAT checkpoint (a path or a loaded dict) for the
    config ``cfg``: a ``QuantizedModel`` in eval mode, fix positions
    frozen, nothing recalibrated."""
    from mmdet3d.registry import MODELS
    if isinstance(checkpoint, str):
        source = source or checkpoint
        checkpoint = load_checkpoint_file(checkpoint)
    source = source or 'the checkpoint'
    state = qat_state_of(checkpoint)
    if state is None:
        raise QuantStateError(f'{source} is not a QAT checkpoint (no '
                              f'{QAT_KEY!r} entry)')
    detector = MODELS.build(copy.deepcopy(cfg.model))
    partition_detector(detector)  # UnsupportedModelError early
    qmodel = build_qat_model(detector, state, source)
    state_dict = checkpoint['state_dict']
    _check_state_dict(qmodel.model, state_dict, source)
    qmodel.model.load_state_dict(
        {(k[7:] if k.startswith('module.') else k): v
         for k, v in state_dict.items()}, strict=True)
    for qmod in qmodel.qmods.values():
        qmod.set_collecting(False)
        qmod.check_calibrated()
    qmodel.model.eval()
    return qmodel


def ensure_qat_hook(cfg, checkpoint: dict) -> bool:
    """Add a ``DPUQATHook`` to ``cfg.custom_hooks`` when ``checkpoint`` is a
    QAT checkpoint and the config has none (so ``tools/test.py`` /
    ``tools/train.py`` with the float config load it); returns whether the
    checkpoint is a QAT checkpoint."""
    state = qat_state_of(checkpoint)
    if state is None:
        return False
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') in (
            'DPUQATHook', DPUQATHook) for h in hooks):
        hooks.append(dict(type='DPUQATHook',
                          backend=state.get('backend', 'builtin'),
                          bitwidth=int(state.get('bitwidth', 8))))
        cfg.custom_hooks = hooks
    return True


def _rebind_optimizer(runner, params: List[nn.Parameter]) -> None:
    """Point the runner's optimizer at ``params`` (same object and
    hyper-parameters, fresh state), keeping its number of groups so the
    parameter schedulers and a resumed optimizer state still fit."""
    from mmengine.optim import OptimWrapper
    wrapper = runner.optim_wrapper
    if not isinstance(wrapper, OptimWrapper):
        return  # not training (test / val runs): nothing to point
    optimizer = wrapper.optimizer
    groups = optimizer.param_groups
    if len(groups) > 1:
        runner.logger.warning(
            f'DPUQATHook: the optimizer has {len(groups)} parameter groups; '
            'all quantized weights train with the hyper-parameters of the '
            'first one')
    new_groups = []
    for i, group in enumerate(groups):
        new = {k: v for k, v in group.items() if k != 'params'}
        new['params'] = list(params) if i == 0 else []
        new_groups.append(new)
    optimizer.param_groups = new_groups
    optimizer.state = defaultdict(dict)


@HOOKS.register_module()
class DPUQATHook(Hook):
    """Quantization-aware training of the DPU subgraphs (module doc).

    Args:
        backend: ``'auto'`` (nndct when ``pytorch_nndct`` imports, else
            builtin), ``'builtin'`` or ``'nndct'``.
        calib_len: frames of the train split (test pipeline) that calibrate
            the fix positions before the first iteration (builtin).
        calib_sample_method: ``'random'`` (seeded) or ``'sequential'``.
        seed: seed of the random calibration frames.
        pillar_input_frames: frames that set the pillar encoder's input
            range (the first of the calibration frames).
        freeze_bn_after: must be 0 / None (BN is folded, see module doc).
        freeze_observers_after: QAT iterations after which every fix
            position is frozen (0: right after calibration).
        bitwidth: bits of weights and activations (the DPU: 8).
    """

    priority = 'NORMAL'  # before CheckpointHook / LoggerHook

    def __init__(self, backend: str = 'auto', calib_len: int = 100,
                 calib_sample_method: str = 'random', seed: int = 0,
                 pillar_input_frames: int = 16,
                 freeze_bn_after: Optional[int] = 0,
                 freeze_observers_after: int = 0, bitwidth: int = 8):
        for flag, value in (('calib_len', calib_len),
                            ('pillar_input_frames', pillar_input_frames)):
            if not isinstance(value, int) or isinstance(value, bool) or \
                    value < 1:
                raise UserInputError(
                    f'DPUQATHook: {flag} must be a positive number of '
                    f'frames, got {value!r}')
        if (not isinstance(freeze_observers_after, int)
                or isinstance(freeze_observers_after, bool)
                or freeze_observers_after < 0):
            raise UserInputError(
                'DPUQATHook: freeze_observers_after must be a number of '
                f'iterations >= 0, got {freeze_observers_after!r}')
        if freeze_bn_after not in (None, 0):
            raise UserInputError(
                'DPUQATHook: freeze_bn_after must be 0 (or None): the DPU '
                'arithmetic folds every BatchNorm into its convolution when '
                'the subgraphs are quantized, so BN statistics are frozen '
                f'from the first QAT iteration (got {freeze_bn_after!r})')
        # Fails now for an unavailable backend (nndct outside Vitis AI).
        self._backend = get_backend(backend, quant_mode='calib',
                                    output_dir='qat', bitwidth=bitwidth)
        self.backend_name = self._backend.name
        self.requested_backend = backend
        self.calib_len = calib_len
        self.calib_sample_method = calib_sample_method
        self.seed = seed
        self.pillar_input_frames = pillar_input_frames
        self.freeze_observers_after = freeze_observers_after
        self.bitwidth = bitwidth
        self.qmodel = None
        self.frozen = False
        self.restored = False
        self.training = False  # set by before_train
        self.info: dict = {}
        self._histories: Dict[str, Dict[str, List[int]]] = {}

    # -- helpers --------------------------------------------------------------
    @property
    def observing(self) -> bool:
        return (self.training and self.qmodel is not None
                and self.backend_name == 'builtin' and not self.frozen)

    def _log(self, runner, msg: str) -> None:
        runner.logger.info(f'DPUQATHook: {msg}')

    def _install(self, runner, qmodel) -> None:
        runner.model = qmodel.model
        self.qmodel = qmodel
        params = [p for qmod in qmodel.qmods.values()
                  for p in qmod.parameters() if p.requires_grad]
        _rebind_optimizer(runner, params)

    def _freeze(self, runner, done: int) -> None:
        messages = []
        for qmod in self.qmodel.qmods.values():
            qmod.set_collecting(False)
            qmod.check_calibrated()
            messages += qmod.adjust_shifts()
        self.frozen = True
        self._histories = {}
        self._log(runner, f'fix positions frozen after {done} iterations'
                  + (f' ({len(messages)} DPU shift-limit adjustments)'
                     if messages else ''))

    def _legal_positions(self) -> None:
        """While observing: the current positions with the shifter limits
        (they are derived again at the next training iteration)."""
        for qmod in self.qmodel.qmods.values():
            qmod.set_collecting(False)
            qmod.adjust_shifts()

    def _state(self, runner) -> dict:
        model = self.qmodel.model
        dec = model.partition.decoration
        input_range = None
        if dec is not None and PILLAR_ENCODER in model.subgraph_names:
            input_range = [float(1.0 / s) for s in dec.input_scale.tolist()]
        histories = {}
        if not self.frozen:
            for name, qmod in self.qmodel.qmods.items():
                histories[name] = {
                    k: [int(p) for p in s.history]
                    for k, s in qmod.scalers().items() if not s.is_param}
        return dict(
            format=QAT_FORMAT,
            backend=self.backend_name,
            bitwidth=int(self.bitwidth),
            subgraphs=list(model.subgraph_names),
            tensors={name: [[k, v] for k, v in qmod.tensors.items()]
                     for name, qmod in self.qmodel.qmods.items()},
            pillar_input_range=input_range,
            frozen=bool(self.frozen),
            freeze_observers_after=int(self.freeze_observers_after),
            histories=histories,
            iteration=int(runner.iter),
            **self.info,
            version=__version__)

    # -- events ---------------------------------------------------------------
    def before_run(self, runner) -> None:
        model = runner.model
        if is_model_wrapper(model):
            raise UserInputError(
                'DPUQATHook: distributed / wrapped models are not supported; '
                'run quantization-aware training on one process')
        if isinstance(model, VitisPartitionedDetector):
            return
        try:
            partition_detector(model)
        except UnsupportedModelError as e:
            raise UnsupportedModelError(
                'DPUQATHook: this model has no part the DPU partition can '
                f'quantize, so there is nothing to train for the DPU: {e}'
            ) from e

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = qat_state_of(checkpoint)
        if state is None:
            if self.qmodel is not None:
                raise QuantStateError(
                    'DPUQATHook: a float checkpoint cannot be loaded into '
                    'the quantized model')
            return
        if (self.backend_name != 'builtin' and self.requested_backend == 'auto'
                and state.get('backend') == 'builtin'):
            self.backend_name = 'builtin'  # continue with what trained it
        if self.backend_name != 'builtin':
            raise QuantStateError(
                'DPUQATHook: resuming / loading a QAT checkpoint is '
                f'implemented for the builtin backend only, not '
                f'{self.backend_name!r}')
        if self.qmodel is not None:
            raise QuantStateError('DPUQATHook: the model is already '
                                  'quantized; load one checkpoint')
        if int(state.get('bitwidth', 8)) != self.bitwidth:
            raise QuantStateError(
                f'DPUQATHook: the checkpoint was trained with bitwidth '
                f'{state.get("bitwidth")}, the hook has {self.bitwidth}')
        qmodel = build_qat_model(runner.model, state)
        _check_state_dict(qmodel.model, checkpoint['state_dict'],
                          'the QAT checkpoint')
        self._install(runner, qmodel)
        self.frozen = bool(state.get('frozen'))
        self._histories = state.get('histories') or {}
        self.info = {k: state[k] for k in ('calib', 'float_checkpoint')
                     if k in state}
        self.restored = True
        self._log(runner, 'rebuilt the quantized DPU subgraphs '
                  f'{qmodel.model.subgraph_names} from the QAT checkpoint '
                  f'(fix positions {"frozen" if self.frozen else "observing"}'
                  '; no recalibration)')

    def before_train(self, runner) -> None:
        self.training = True
        if self.qmodel is None:
            if self.backend_name == 'nndct':
                self._wrap_nndct(runner)
                return
            self._calibrate(runner)
        elif self.restored:
            for name, qmod in self.qmodel.qmods.items():
                for key, scaler in qmod.scalers().items():
                    hist = self._histories.get(name, {}).get(key)
                    if hist is not None:
                        scaler.history = [int(p) for p in hist]
                qmod.check_calibrated()
        if self.backend_name != 'builtin':
            return
        if not self.frozen and runner.iter >= self.freeze_observers_after:
            self._freeze(runner, runner.iter)
        elif not self.frozen:
            for qmod in self.qmodel.qmods.values():
                qmod.set_collecting(True)
            self._log(runner, 'fix positions follow the data and weights '
                      f'until iteration {self.freeze_observers_after}')

    def _calibrate(self, runner) -> None:
        from ..quantization.quant_runner import (
            _batch, _progress, build_dataset, calib_dataset_cfg, head_outputs,
            pillar_input_range, quantize_model, select_indices)
        detector = runner.model
        start = time.time()
        dataset = build_dataset(calib_dataset_cfg(runner.cfg))
        indices = select_indices(len(dataset), self.calib_len,
                                 self.calib_sample_method, self.seed)
        input_range = pillar_input_range(
            detector, dataset, indices[:self.pillar_input_frames])
        backend = BuiltinBackend(quant_mode='calib',
                                 output_dir=osp.join(runner.work_dir, 'qat'),
                                 bitwidth=self.bitwidth,
                                 device=_device_of(detector))
        qmodel = quantize_model(detector, backend, install=True,
                                pillar_input_range=input_range)
        qmodel.model.eval()
        for index in _progress(indices, 'QAT calibration'):
            head_outputs(qmodel.model, _batch(dataset, index))
        for qmod in qmodel.qmods.values():
            qmod.check_calibrated()
        self.info = dict(
            calib=dict(calib_len=len(indices),
                       calib_sample_method=self.calib_sample_method,
                       seed=self.seed, indices=list(indices),
                       seconds=round(time.time() - start, 3)),
            float_checkpoint=runner._load_from)
        self._install(runner, qmodel)
        self._log(runner, f'calibrated the DPU subgraphs '
                  f'{qmodel.model.subgraph_names} on {len(indices)} frames; '
                  'training and validation now run the int8 fake-quant model')

    def _wrap_nndct(self, runner) -> None:
        from ..quantization.quant_runner import (
            build_dataset, calib_dataset_cfg, pillar_input_range,
            select_indices)
        detector = runner.model
        dataset = build_dataset(calib_dataset_cfg(runner.cfg))
        indices = select_indices(len(dataset), self.pillar_input_frames,
                                 self.calib_sample_method, self.seed)
        input_range = pillar_input_range(detector, dataset, indices)
        model = VitisPartitionedDetector(detector)
        if input_range is not None:
            model.partition.set_pillar_input_scale(torch.tensor(input_range))
        backend = get_backend('nndct', quant_mode='calib',
                              output_dir=osp.join(runner.work_dir,
                                                  'qat_nndct'),
                              bitwidth=self.bitwidth,
                              device=_device_of(detector))
        from ..quantization.quant_runner import QuantizedModel
        qmods = OrderedDict()
        for name in model.subgraph_names:
            qmods[name] = backend.qat_wrap(name, model.get_subgraph(name),
                                           model.example_inputs(name))
            model.set_subgraph(name, qmods[name])
        self._install(runner, QuantizedModel(detector, model, backend, {},
                                             qmods))
        self._log(runner, 'DPU subgraphs wrapped by nndct QatProcessor')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if not self.observing:
            return
        for qmod in self.qmodel.qmods.values():
            for scaler in qmod.scalers().values():
                if scaler.is_param:
                    scaler.reset()  # derived again from the new weights
            qmod.set_collecting(True)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self.observing and runner.iter + 1 >= self.freeze_observers_after:
            self._freeze(runner, runner.iter + 1)

    def before_val_epoch(self, runner) -> None:
        if self.observing:
            self._legal_positions()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self.observing:
            for qmod in self.qmodel.qmods.values():
                qmod.set_collecting(True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.qmodel is None:
            return
        if self.backend_name != 'builtin':
            checkpoint[QAT_KEY] = dict(format=QAT_FORMAT,
                                       backend=self.backend_name,
                                       version=__version__)
            return
        if self.observing:
            self._legal_positions()
            own = self.qmodel.model.state_dict()
            for key, value in own.items():
                if key.endswith('fix_pos') and key in checkpoint['state_dict']:
                    checkpoint['state_dict'][key] = value.detach().cpu(
                    ).clone()
            for qmod in self.qmodel.qmods.values():
                qmod.set_collecting(True)
        checkpoint[QAT_KEY] = self._state(runner)

    def after_train(self, runner) -> None:
        if self.qmodel is None or self.backend_name != 'nndct':
            return
        for name in self.qmodel.qmods:
            out = self.qmodel.backend.qat_to_deployable(name)
            self._log(runner, f'nndct deployable model of {name} in {out}')


def run_qat(config: str, checkpoint: str, work_dir: str,
            max_epochs: Optional[int] = None,
            cfg_options: Optional[dict] = None, resume: bool = False) -> str:
    """Quantization-aware training from the float ``checkpoint`` with a QAT
    config (one with a ``DPUQATHook``), as ``tools/train.py CONFIG
    --cfg-options load_from=CHECKPOINT`` does; returns the last checkpoint.

    ``max_epochs`` shortens / lengthens the schedule (``train_cfg`` and
    the cosine schedule's end); ``resume`` continues the latest checkpoint
    of ``work_dir``.  For ``make demo``::

        ckpt = run_qat('configs/pointpillars/'
                       'pointpillars_small_secfpn_synthetic-nus-3d_qat.py',
                       'work_dirs/demo/float/epoch_10.pth',
                       'work_dirs/demo/qat')
        # then tools/quant.py CONFIG ckpt --quant_mode test --dump_xmodel
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner, find_latest_checkpoint

    from ..config_utils import load_config
    cfg = load_config(config, cfg_options, splits=('train', 'val'))
    hooks = cfg.get('custom_hooks') or []
    if not any(isinstance(h, dict) and h.get('type') == 'DPUQATHook'
               for h in hooks):
        raise UserInputError(
            f'{config} has no DPUQATHook in custom_hooks: use a QAT config '
            '(e.g. configs/pointpillars/'
            'pointpillars_small_secfpn_synthetic-nus-3d_qat.py)')
    load_checkpoint_file(checkpoint)  # fail now, not after setup
    cfg.work_dir = work_dir
    if resume:
        cfg.resume, cfg.load_from = True, None
    else:
        cfg.resume, cfg.load_from = False, checkpoint
    if max_epochs is not None:
        cfg.train_cfg.max_epochs = max_epochs
        cfg.train_cfg.val_interval = max_epochs
        for sched in cfg.get('param_scheduler') or []:
            if sched.get('by_epoch') and sched.get('type') == \
                    'CosineAnnealingLR':
                sched['end'] = sched['T_max'] = max_epochs
        ckpt_hook = cfg.get('default_hooks', {}).get('checkpoint')
        if ckpt_hook is not None and ckpt_hook.get('interval', 1) > \
                max_epochs:
            ckpt_hook['interval'] = max_epochs
    runner = (Runner.from_cfg(cfg) if 'runner_type' not in cfg else
              RUNNERS.build(cfg))
    runner.train()
    latest = find_latest_checkpoint(work_dir)
    if latest is None:
        raise UserInputError(f'QAT wrote no checkpoint in {work_dir}')
    return latest
