"""The interface every quantization backend implements.

A backend quantizes *DPU subgraphs*: plain tensor-in / tensor-out
``nn.Module`` s.  It knows nothing about mmdet3d.  The flow mirrors
vai_q_pytorch's ``torch_quantizer`` so that ``tools/quant.py`` drives every
backend the same way::

    backend = get_backend('auto', quant_mode='calib',
                          output_dir='quantize_result')
    qmods = {name: backend.wrap(name, module, example_inputs)
             for name, (module, example_inputs) in subgraphs.items()}
    if fast_finetune:                       # optional, calib and test alike
        for name, qmod in qmods.items():
            backend.fast_finetune(name, qmod, calib_inputs[name])
    ... run the detector with the qmods over the calibration data ...
    if quant_mode == 'calib':
        backend.export_quant_config()       # output_dir/quant_info.json

Modes: ``float`` -- ``wrap`` returns the module unchanged; ``calib`` -- the
wrapped module runs fake-quant while collecting calibration statistics;
``test`` -- the wrapped module is the int8 fake-quant module with the state
``calib`` stored in ``output_dir``.
"""
import os
from abc import ABCMeta, abstractmethod
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.fileio import atomic_write, atomic_write_json

__all__ = [
    'QUANT_MODES', 'QuantBackend', 'QuantStateError',
    'BackendUnavailableError', 'atomic_write', 'atomic_write_json'
]

QUANT_MODES = ('float', 'calib', 'test')
QUANT_INFO_FILE = 'quant_info.json'


class QuantStateError(UserInputError):
    """Quantization state missing, stale or not matching (e.g. test mode
    before calib), or a backend step called in the wrong mode."""


class BackendUnavailableError(UserInputError):
    """The requested backend cannot run in this environment."""


def normalize_inputs(example_inputs) -> Tuple:
    """A single tensor becomes a 1-tuple; lists become tuples."""
    if isinstance(example_inputs, Tensor):
        return (example_inputs, )
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    if not isinstance(example_inputs, tuple):
        raise UserInputError(
            'example inputs of a DPU subgraph must be a tensor or a tuple '
            f'of tensors, got {type(example_inputs).__name__}')
    return example_inputs


class QuantBackend(metaclass=ABCMeta):
    """One quantizer for all DPU subgraphs of a model (see module doc).

    Args:
        quant_mode: ``'float'``, ``'calib'`` or ``'test'``.
        output_dir: where ``calib`` writes and ``test`` reads the state.
        bitwidth: bits of weights and activations (the DPU: 8).
        device: where the wrapped modules run.
    """

    #: registry name (``get_backend(name=...)``)
    name = ''

    def __init__(self, quant_mode: str = 'calib',
                 output_dir: str = 'quantize_result', bitwidth: int = 8,
                 device='cpu'):
        if quant_mode not in QUANT_MODES:
            raise UserInputError(
                f'quant_mode must be one of {QUANT_MODES}, got {quant_mode!r}')
        if (not isinstance(bitwidth, int) or isinstance(bitwidth, bool)
                or not 2 <= bitwidth <= 16):
            raise UserInputError(
                f'bitwidth must be an int in [2, 16] (the DPU uses 8), got '
                f'{bitwidth!r}')
        if not output_dir or not isinstance(output_dir, (str, os.PathLike)):
            raise UserInputError(f'invalid output_dir {output_dir!r}')
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise UserInputError(f'invalid device {device!r}: {e}') from e
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise UserInputError(
                f'device {device} requested but CUDA is not available')
        self.quant_mode = quant_mode
        self.output_dir = os.fspath(output_dir)
        self.bitwidth = bitwidth
        self.device = device

    @property
    def quant_info_path(self) -> str:
        return os.path.join(self.output_dir, QUANT_INFO_FILE)

    @abstractmethod
    def wrap(self, name: str, module: nn.Module,
             example_inputs: Tuple[Tensor, ...]) -> nn.Module:
        """The module to run in place of DPU subgraph ``name``.

        Same call signature as ``module``.  ``example_inputs`` is one
        representative input tuple (used for tracing).  ``module`` is not
        modified.
        """

    @abstractmethod
    def fast_finetune(self, name: str, qmod: nn.Module,
                      calib_inputs: Sequence[Tuple[Tensor, ...]]) -> None:
        """Optional: calib -- improve the quantized subgraph on
        ``calib_inputs`` (a list of input tuples); test -- load what calib's
        fast finetune stored (an error when it did not run)."""

    @abstractmethod
    def export_quant_config(self) -> str:
        """After calibration: write ``output_dir/quant_info.json`` (and what
        test mode needs) atomically; returns the quant_info.json path."""

    # -- helpers ------------------------------------------------------------
    def _require_mode(self, step: str, *modes: str) -> None:
        if self.quant_mode not in modes:
            raise QuantStateError(
                f'{step} is a --quant_mode {"/".join(modes)} step; this '
                f'{self.name} backend runs in --quant_mode {self.quant_mode}')
