"""The nndct backend: AMD's vai_q_pytorch (``pytorch_nndct``).

Only inside the Vitis AI docker image (conda env ``vitis-ai-pytorch``);
``pytorch_nndct`` is imported when the backend is created, never at module
import.  One ``torch_quantizer`` per DPU subgraph, each with its own
sub-folder ``output_dir/<subgraph name>/`` (nndct writes ``quant_info.json``,
its generated model code, ``param.pth`` of fast finetune, ... per quantizer
and would overwrite them in a shared folder).

:meth:`NndctBackend.export_quant_config` calls each quantizer's
``export_quant_config()`` and then merges their ``quant_info.json`` into
``output_dir/quant_info.json`` with the keys' model prefix replaced by the
subgraph name (``"<Class>::<Class>/..."`` -> ``"<name>::<name>/..."``), the
same naming as the builtin backend, so both can be compared.

Used API (vai_q_pytorch, Vitis AI 3.x ``pytorch_nndct.apis``)::

    quantizer = torch_quantizer(quant_mode, module, input_args,
                                output_dir=..., bitwidth=..., device=...)
    quantizer.quant_model                    # what runs
    quantizer.fast_finetune(run_fn, run_args)  # calib, before calibration
    quantizer.load_ft_param()                # test
    quantizer.export_quant_config()          # calib, after calibration
    quantizer.export_xmodel(output_dir, deploy_check=True)  # test, batch 1

Quantization-aware training (``pytorch_nndct.QatProcessor``, see
:meth:`NndctBackend.qat_wrap`)::

    qat_processor = QatProcessor(module, input_args, bitwidth=..., device=...)
    trainable = qat_processor.trainable_model()   # train this one
    qat_processor.to_deployable(trainable, output_dir)  # after training
"""
import copy
import json
import os
from collections import OrderedDict
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import (QUANT_INFO_FILE, BackendUnavailableError, QuantBackend,
                   QuantStateError, atomic_write_json, normalize_inputs)
from .graph import check_subgraph_name

__all__ = ['NndctBackend', 'rename_nndct_key']


def rename_nndct_key(key: str, name: str) -> str:
    """``"Model::Model/Conv2d[c]/w"`` -> ``"<name>::<name>/Conv2d[c]/w"``,
    ``"Model::input_0"`` -> ``"<name>::input_0"``."""
    model, sep, rest = key.partition('::')
    if not sep:
        return f'{name}::{key}'
    if rest == model or rest.startswith(model + '/'):
        rest = name + rest[len(model):]
    return f'{name}::{rest}'


def _run_all(model: nn.Module, inputs) -> None:
    """``run_fn`` handed to nndct's fast_finetune."""
    with torch.no_grad():
        for args in inputs:
            model(*normalize_inputs(args))


class NndctBackend(QuantBackend):
    """vai_q_pytorch's ``torch_quantizer``, one per DPU subgraph."""

    name = 'nndct'

    def __init__(self, quant_mode: str = 'calib',
                 output_dir: str = 'quantize_result', bitwidth: int = 8,
                 device='cpu'):
        super().__init__(quant_mode, output_dir, bitwidth, device)
        try:
            from pytorch_nndct.apis import torch_quantizer
        except Exception as e:
            raise BackendUnavailableError(
                'the nndct backend needs pytorch_nndct (vai_q_pytorch), '
                'only available inside the Vitis AI docker image; here it '
                f'does not import ({type(e).__name__}: {e}). Use --backend '
                'builtin.') from e
        self._torch_quantizer = torch_quantizer
        self._quantizers = OrderedDict()  # name -> (quantizer, quant_model)
        self._ft_loaded = set()  # test mode: fast-finetuned params loaded

    def subgraph_dir(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def wrap(self, name: str, module: nn.Module,
             example_inputs: Tuple[Tensor, ...]) -> nn.Module:
        check_subgraph_name(name)
        if self.quant_mode == 'float':
            return module
        if name in self._quantizers:
            raise QuantStateError(
                f'DPU subgraph {name!r} was already wrapped by this backend')
        example_inputs = tuple(
            x.to(self.device) if isinstance(x, Tensor) else x
            for x in normalize_inputs(example_inputs))
        sub_dir = self.subgraph_dir(name)
        if self.quant_mode == 'test' and not os.path.isfile(
                os.path.join(sub_dir, QUANT_INFO_FILE)):
            raise QuantStateError(
                f'no nndct calibration result for DPU subgraph {name!r} '
                f'({os.path.join(sub_dir, QUANT_INFO_FILE)} is missing): '
                'run --quant_mode calib first (with the same --output_dir)')
        quantizer = self._torch_quantizer(
            self.quant_mode, copy.deepcopy(module).to(self.device).eval(),
            example_inputs,
            output_dir=sub_dir, bitwidth=self.bitwidth, device=self.device)
        qmod = quantizer.quant_model
        self._quantizers[name] = (quantizer, qmod)
        return qmod

    def fast_finetune(self, name: str, qmod: nn.Module,
                      calib_inputs: Sequence[Tuple[Tensor, ...]]) -> None:
        """calib: ``quantizer.fast_finetune`` (AdaQuant) over calib_inputs;
        test: ``quantizer.load_ft_param()``."""
        self._require_mode('fast_finetune', 'calib', 'test')
        entry = self._quantizers.get(name)
        if entry is None or entry[1] is not qmod:
            raise QuantStateError(
                f'{name!r} is not a module wrapped by this backend '
                '(call wrap() first and pass what it returned)')
        quantizer = entry[0]
        if self.quant_mode == 'test':
            quantizer.load_ft_param()
            self._ft_loaded.add(name)
            return
        calib_inputs = list(calib_inputs)
        if not calib_inputs:
            raise QuantStateError(
                f'fast_finetune of {name!r} needs calibration inputs')
        quantizer.fast_finetune(_run_all, (qmod, calib_inputs))

    def export_quant_config(self) -> str:
        """Each quantizer's ``export_quant_config()``, then the merged
        ``output_dir/quant_info.json``."""
        self._require_mode('export_quant_config', 'calib')
        if not self._quantizers:
            raise QuantStateError(
                'export_quant_config: no DPU subgraph was wrapped')
        merged = OrderedDict(param=OrderedDict(), output=OrderedDict(),
                             input=OrderedDict(), fast_finetuned=False,
                             bias_corrected=False, version=None)
        for name, (quantizer, _) in self._quantizers.items():
            quantizer.export_quant_config()
            path = os.path.join(self.subgraph_dir(name), QUANT_INFO_FILE)
            with open(path) as f:
                info = json.load(f)
            for section in ('param', 'output', 'input'):
                for key, value in (info.get(section) or {}).items():
                    merged[section][rename_nndct_key(key, name)] = value
            for flag in ('fast_finetuned', 'bias_corrected'):
                merged[flag] = merged[flag] or bool(info.get(flag))
            merged['version'] = merged['version'] or info.get('version')
        atomic_write_json(self.quant_info_path, merged)
        return self.quant_info_path

    # -- deploy --------------------------------------------------------------
    @staticmethod
    def require_xir() -> None:
        """Refuse clearly where Vitis AI's XIR (``import xir``), which
        nndct's xmodel export uses, is missing."""
        try:
            import xir  # noqa: F401
        except Exception as e:
            raise BackendUnavailableError(
                'the xmodel export (--dump_xmodel with the nndct backend) '
                'needs XIR, the Vitis AI `xir` Python module of the Vitis AI '
                'docker image; it does not import here '
                f'({type(e).__name__}: {e}). Use --backend builtin for the '
                'ONNX deploy folder.') from e

    def export_xmodel(self, name: str, module: nn.Module, example_inputs,
                      out_dir: str) -> dict:
        """Write DPU subgraph ``name`` as ``out_dir/<name>_int.xmodel`` with
        ``torch_quantizer.export_xmodel(output_dir, deploy_check=True)``
        (test mode, batch size 1; nndct also dumps its deploy-check data in
        ``out_dir``).  ``module`` is the float subgraph.

        nndct's ``dump_xmodel`` exports the quantizer it registered last, so
        a fresh test-mode quantizer of this subgraph is made (loading its
        calibration result and fast-finetuned parameters) and run once
        right before the export.  Returns ``dict(path, subgraph, inputs,
        outputs, shapes)``; the xmodel itself carries the fix positions, so
        the boundary entries have none (VART reads ``fix_point`` from the
        xmodel's tensors on the board).
        """
        self._require_mode('export_xmodel', 'test')
        self.require_xir()
        if name not in self._quantizers:
            raise QuantStateError(
                f'DPU subgraph {name!r} was not wrapped by this backend')
        example_inputs = tuple(
            x[:1].to(self.device) if isinstance(x, Tensor) else x
            for x in normalize_inputs(example_inputs))
        quantizer = self._torch_quantizer(
            'test', copy.deepcopy(module).to(self.device).eval(),
            example_inputs, output_dir=self.subgraph_dir(name),
            bitwidth=self.bitwidth, device=self.device)
        if name in self._ft_loaded:
            quantizer.load_ft_param()
        with torch.no_grad():
            outs = quantizer.quant_model(*example_inputs)
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        os.makedirs(out_dir, exist_ok=True)
        before = set(f for f in os.listdir(out_dir) if f.endswith('.xmodel'))
        quantizer.export_xmodel(output_dir=out_dir, deploy_check=True)
        new = sorted(f for f in os.listdir(out_dir)
                     if f.endswith('.xmodel') and f not in before)
        if len(new) != 1:
            raise QuantStateError(
                f'export_xmodel of {name!r} wrote {new or "no xmodel"} in '
                f'{out_dir}, expected one <Model>_int.xmodel')
        path = os.path.join(out_dir, f'{name}_int.xmodel')
        os.replace(os.path.join(out_dir, new[0]), path)

        def entries(prefix, tensors):
            return [OrderedDict(name=f'{prefix}_{i}', tensor=None,
                                fix_pos=None, scale=None)
                    for i, _ in enumerate(tensors)]

        return OrderedDict(
            path=path, subgraph=name,
            inputs=entries('input', example_inputs),
            outputs=entries('output', outs),
            shapes=(
                {f'input_{i}': list(x.shape)
                 for i, x in enumerate(example_inputs)},
                {f'output_{i}': list(o.shape) for i, o in enumerate(outs)}))

    # -- quantization-aware training ----------------------------------------
    def qat_wrap(self, name: str, module: nn.Module,
                 example_inputs: Tuple[Tensor, ...]) -> nn.Module:
        """nndct's QAT: ``QatProcessor(module, inputs, bitwidth, device)
        .trainable_model()`` for DPU subgraph ``name`` (train the returned
        module; :meth:`qat_to_deployable` after training)."""
        check_subgraph_name(name)
        try:
            from pytorch_nndct import QatProcessor
        except Exception as e:
            raise BackendUnavailableError(
                'quantization-aware training with the nndct backend needs '
                f'pytorch_nndct.QatProcessor ({type(e).__name__}: {e})'
            ) from e
        if not hasattr(self, '_qat'):
            self._qat = OrderedDict()
        if name in self._qat:
            raise QuantStateError(
                f'DPU subgraph {name!r} was already wrapped for QAT')
        example_inputs = tuple(
            x.to(self.device) if isinstance(x, Tensor) else x
            for x in normalize_inputs(example_inputs))
        processor = QatProcessor(
            copy.deepcopy(module).to(self.device), example_inputs,
            bitwidth=self.bitwidth, device=self.device)
        trainable = processor.trainable_model()
        self._qat[name] = (processor, trainable)
        return trainable

    def qat_to_deployable(self, name: str) -> str:
        """``QatProcessor.to_deployable(trainable, output_dir/<name>)``
        after QAT; returns that folder (nndct's quant_info.json and
        deployable model, what ``--quant_mode test`` of nndct reads)."""
        entry = getattr(self, '_qat', {}).get(name)
        if entry is None:
            raise QuantStateError(f'{name!r} was not wrapped for QAT')
        processor, trainable = entry
        out = self.subgraph_dir(name)
        processor.to_deployable(trainable, out)
        return out
