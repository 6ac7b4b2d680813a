"""The builtin backend: DPU int8 arithmetic on brevitas, no Vitis AI needed.

Each DPU subgraph becomes a :class:`~.graph.QuantSubgraph` (BN folded,
brevitas quant layers and quantizers with the DPU's power-of-two fix
positions and rounding, see :mod:`.dpu_arithmetic`).

Files (``output_dir``), both written by :meth:`export_quant_config`, each
atomically, the state first:

* ``builtin_state.pt`` -- per subgraph: the ``state_dict`` of the quantized
  graph (folded and, after fast finetune, bias-corrected float weights +
  every fix position), a fingerprint of the float module it was calibrated
  from and the flags; plus a copy of the quant_info;
* ``quant_info.json`` -- nndct's format: ``{"param": {"<name>::<name>/
  <scope>/weight": [8, p], ...}, "output": {"<name>::input_0": [8, p],
  "<name>::<name>/<scope>": [8, p], ...}, "input": {}, "fast_finetuned":
  bool, "bias_corrected": bool, "version": "..."}``.

Test mode rebuilds the graph from the float module, checks it against the
stored state (structure and weights fingerprint) and loads it.
"""
import json
import os
import warnings
from collections import OrderedDict
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mmdet3d_vitis.version import __version__
from .base import (QuantBackend, QuantStateError, atomic_write,
                   atomic_write_json, normalize_inputs)
from .graph import QuantSubgraph, build_quant_subgraph, check_subgraph_name

with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    import brevitas
    from brevitas.graph.calibrate import bias_correction_mode

__all__ = ['BuiltinBackend', 'STATE_FILE']

STATE_FILE = 'builtin_state.pt'
STATE_FORMAT = 1


def _run_all(qmod: nn.Module, inputs) -> None:
    with torch.no_grad():
        for args in inputs:
            qmod(*normalize_inputs(args))


class BuiltinBackend(QuantBackend):
    """vai_q_pytorch's DPU quantization re-done on brevitas (module doc)."""

    name = 'builtin'

    def __init__(self, quant_mode: str = 'calib',
                 output_dir: str = 'quantize_result', bitwidth: int = 8,
                 device='cpu'):
        super().__init__(quant_mode, output_dir, bitwidth, device)
        self._subgraphs: 'OrderedDict[str, QuantSubgraph]' = OrderedDict()
        self._state: Optional[dict] = None
        #: messages of the last export (DPU shift-limit adjustments)
        self.adjustments = []

    @property
    def state_path(self) -> str:
        return os.path.join(self.output_dir, STATE_FILE)

    # -- wrap ---------------------------------------------------------------
    def wrap(self, name: str, module: nn.Module,
             example_inputs: Tuple[Tensor, ...]) -> nn.Module:
        check_subgraph_name(name)
        if self.quant_mode == 'float':
            return module
        if name in self._subgraphs:
            raise QuantStateError(
                f'DPU subgraph {name!r} was already wrapped by this backend')
        example_inputs = normalize_inputs(example_inputs)
        if self.quant_mode == 'test':
            entry = self._stored_entry(name)  # before any work: fail fast
        qmod = build_quant_subgraph(name, module, example_inputs,
                                    self.bitwidth, self.device)
        if self.quant_mode == 'calib':
            qmod.set_collecting(True)
        else:
            self._load_entry(name, qmod, entry)
        self._subgraphs[name] = qmod
        return qmod

    def build(self, name: str, module: nn.Module,
              example_inputs: Tuple[Tensor, ...]) -> QuantSubgraph:
        """The quantized structure of ``module`` without any quantization
        state (fix positions unset, not collecting), registered like
        :meth:`wrap`'s result: for loading a state dict saved elsewhere
        (a quantization-aware training checkpoint, see
        :mod:`mmdet3d_vitis.hooks.qat`).  Any mode but ``float``."""
        check_subgraph_name(name)
        self._require_mode('build', 'calib', 'test')
        if name in self._subgraphs:
            raise QuantStateError(
                f'DPU subgraph {name!r} was already wrapped by this backend')
        qmod = build_quant_subgraph(name, module,
                                    normalize_inputs(example_inputs),
                                    self.bitwidth, self.device)
        qmod.set_collecting(False)
        self._subgraphs[name] = qmod
        return qmod

    # -- fast finetune -------------------------------------------------------
    def fast_finetune(self, name: str, qmod: nn.Module,
                      calib_inputs: Sequence[Tuple[Tensor, ...]]) -> None:
        """calib: calibrate on ``calib_inputs``, then brevitas bias
        correction (``brevitas.graph.calibrate.bias_correction_mode``) over
        them and re-derive the bias fix positions.  test: check that the
        loaded state was fast-finetuned (wrap already loaded it)."""
        self._require_mode('fast_finetune', 'calib', 'test')
        qmod = self._own(name, qmod)
        if self.quant_mode == 'test':
            if not qmod.fast_finetuned:
                raise QuantStateError(
                    f'DPU subgraph {name!r} was calibrated in '
                    f'{self.output_dir} without fast finetune: re-run '
                    '--quant_mode calib with --fast_finetune, or test '
                    'without it')
            return
        calib_inputs = list(calib_inputs)
        if not calib_inputs:
            raise QuantStateError(
                f'fast_finetune of {name!r} needs calibration inputs')
        # fix positions from the calibration data first
        _run_all(qmod, calib_inputs)
        qmod.set_collecting(False)
        try:
            with torch.no_grad(), bias_correction_mode(qmod):
                _run_all(qmod, calib_inputs)
            # biases moved: their fix positions are derived again
            for conv in qmod.convs:
                if conv['bias'] is None:
                    continue
                layer = qmod.gm.get_submodule(conv['module'])
                scaler = qmod.scalers()[conv['bias']]
                scaler.reset()
                scaler.observe(layer.bias.detach())
        finally:
            qmod.set_collecting(True)
        qmod.fast_finetuned = True
        qmod.bias_corrected = True

    # -- export --------------------------------------------------------------
    def export_quant_config(self) -> str:
        """Finalize the fix positions (DPU shift limits), freeze the wrapped
        modules and write ``builtin_state.pt`` + ``quant_info.json``."""
        self._require_mode('export_quant_config', 'calib')
        if not self._subgraphs:
            raise QuantStateError(
                'export_quant_config: no DPU subgraph was wrapped')
        for qmod in self._subgraphs.values():
            qmod.check_calibrated()
        self.adjustments = []
        for qmod in self._subgraphs.values():
            self.adjustments += qmod.adjust_shifts()
            qmod.set_collecting(False)
        info = self._quant_info()
        state = dict(
            format=STATE_FORMAT,
            backend=self.name,
            bitwidth=self.bitwidth,
            quant_info=json.dumps(info, sort_keys=True),
            subgraphs=OrderedDict(
                (name, dict(
                    state_dict=OrderedDict(
                        (k, v.detach().cpu())
                        for k, v in qmod.state_dict().items()),
                    fingerprint=qmod.float_fingerprint,
                    tensors=list(qmod.tensors.items()),
                    fast_finetuned=qmod.fast_finetuned,
                    bias_corrected=qmod.bias_corrected))
                for name, qmod in self._subgraphs.items()))
        os.makedirs(self.output_dir, exist_ok=True)
        atomic_write(self.state_path, lambda f: torch.save(state, f))
        atomic_write_json(self.quant_info_path, info)
        return self.quant_info_path

    def export_onnx(self, name: str, qmod: nn.Module, example_inputs,
                    path: str) -> dict:
        """Write the frozen DPU subgraph ``name`` (``qmod``, as returned by
        :meth:`wrap`) to ``path`` as a QDQ ONNX model (int8, power-of-two
        scales, zero point 0), atomically; after :meth:`export_quant_config`
        (calib) or in test mode.  Returns the per-tensor scales and the
        ONNX input / output names (see
        :func:`.onnx_export.export_subgraph_onnx`)."""
        from .onnx_export import export_subgraph_onnx
        qmod = self._own(name, qmod)
        return export_subgraph_onnx(qmod, example_inputs, path)

    def deploy_check(self, name: str, qmod: nn.Module, onnx_path: str,
                     inputs, scales) -> dict:
        """onnxruntime on ``onnx_path`` (written by :meth:`export_onnx`)
        vs the fake-quant subgraph ``name`` on ``inputs``, per output in
        LSBs of ``scales`` (see :func:`.onnx_export.deploy_check`)."""
        from .onnx_export import deploy_check
        return deploy_check(self._own(name, qmod), onnx_path, inputs,
                            scales)

    def _quant_info(self) -> dict:
        param, output = OrderedDict(), OrderedDict()
        for qmod in self._subgraphs.values():
            p, o = qmod.quant_info(self.bitwidth)
            param.update(p)
            output.update(o)
        subs = list(self._subgraphs.values())
        return OrderedDict(
            param=param,
            output=output,
            input=OrderedDict(),
            fast_finetuned=any(q.fast_finetuned for q in subs),
            bias_corrected=any(q.bias_corrected for q in subs),
            version=f'mmdet3d_vitis {__version__} builtin (brevitas '
            f'{brevitas.__version__})')

    # -- test-mode state -----------------------------------------------------
    def _load_state(self) -> dict:
        if self._state is not None:
            return self._state
        hint = 'run --quant_mode calib first (with the same --output_dir)'
        missing = [p for p in (self.quant_info_path, self.state_path)
                   if not os.path.isfile(p)]
        if missing:
            raise QuantStateError(
                f'no builtin calibration results in {self.output_dir!r} '
                f'(missing {", ".join(os.path.basename(p) for p in missing)})'
                f': {hint}')
        try:
            state = torch.load(self.state_path, map_location='cpu',
                               weights_only=True)
            with open(self.quant_info_path) as f:
                info = json.load(f)
        except Exception as e:
            raise QuantStateError(
                f'cannot read the calibration results in '
                f'{self.output_dir!r} ({type(e).__name__}: {e}): {hint}'
            ) from e
        if (not isinstance(state, dict) or state.get('format') != STATE_FORMAT
                or state.get('backend') != self.name):
            raise QuantStateError(
                f'{self.state_path} was not written by this version of the '
                f'builtin backend: {hint}')
        if state['bitwidth'] != self.bitwidth:
            raise QuantStateError(
                f'{self.output_dir!r} was calibrated with bitwidth '
                f"{state['bitwidth']}, not {self.bitwidth}: {hint}")
        if json.dumps(info, sort_keys=True) != state['quant_info']:
            raise QuantStateError(
                f'{self.quant_info_path} does not belong to {STATE_FILE} '
                f'(edited, or from another calib run): {hint}')
        self._state = state
        return state

    def _stored_entry(self, name: str) -> dict:
        state = self._load_state()
        entry = state['subgraphs'].get(name)
        if entry is None:
            raise QuantStateError(
                f'DPU subgraph {name!r} was not calibrated in '
                f'{self.output_dir!r} (calibrated: '
                f"{', '.join(state['subgraphs']) or 'none'}): run "
                '--quant_mode calib first')
        return entry

    def _load_entry(self, name: str, qmod: QuantSubgraph,
                    entry: dict) -> None:
        hint = 're-run --quant_mode calib for this model'
        stored = [tuple(t) for t in entry['tensors']]
        own = list(qmod.tensors.items())
        shapes = {k: tuple(v.shape) for k, v in qmod.state_dict().items()}
        stored_shapes = {
            k: tuple(v.shape) for k, v in entry['state_dict'].items()}
        if stored != own or shapes != stored_shapes:
            diff = sorted(set(stored) ^ set(own)) or sorted(
                k for k in set(shapes) | set(stored_shapes)
                if shapes.get(k) != stored_shapes.get(k))
            raise QuantStateError(
                f'the quantization state of DPU subgraph {name!r} in '
                f'{self.output_dir!r} does not match the module (different '
                f'model or config? first difference: {diff[0]}): {hint}')
        if entry['fingerprint'] != qmod.float_fingerprint:
            raise QuantStateError(
                f'the weights of DPU subgraph {name!r} differ from the ones '
                f'calibrated in {self.output_dir!r} (another checkpoint?): '
                f'{hint}')
        try:
            qmod.load_state_dict(entry['state_dict'], strict=True)
        except RuntimeError as e:
            raise QuantStateError(
                f'the quantization state of DPU subgraph {name!r} does not '
                f'match the module: {e}: {hint}') from e
        qmod.set_collecting(False)
        qmod.check_calibrated()
        qmod.fast_finetuned = bool(entry['fast_finetuned'])
        qmod.bias_corrected = bool(entry['bias_corrected'])

    def _own(self, name: str, qmod: nn.Module) -> QuantSubgraph:
        if self._subgraphs.get(name) is not qmod:
            raise QuantStateError(
                f'{name!r} is not a module wrapped by this backend '
                '(call wrap() first and pass what it returned)')
        return qmod
