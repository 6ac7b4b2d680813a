"""Quantization backends for DPU subgraphs, behind one interface.

* ``builtin`` (:class:`.builtin.BuiltinBackend`) -- the DPU's int8
  arithmetic (power-of-two fix positions, diffs calibration, DPU rounding,
  BN folding) re-done on brevitas; runs anywhere.
* ``nndct`` (:class:`.nndct.NndctBackend`) -- AMD's vai_q_pytorch
  (``pytorch_nndct``), only inside the Vitis AI docker image.

``get_backend('auto', ...)`` takes nndct when ``pytorch_nndct`` imports,
else builtin.  See :mod:`.base` for the calling sequence.
"""
import importlib
from typing import Optional

from mmdet3d_vitis.errors import UserInputError
from .base import (QUANT_MODES, BackendUnavailableError, QuantBackend,
                   QuantStateError)
from .builtin import BuiltinBackend
from .nndct import NndctBackend

__all__ = [
    'BACKENDS', 'QUANT_MODES', 'BackendUnavailableError', 'BuiltinBackend',
    'NndctBackend', 'QuantBackend', 'QuantStateError', 'get_backend',
    'nndct_import_error'
]

BACKENDS = {'builtin': BuiltinBackend, 'nndct': NndctBackend}
BACKEND_CHOICES = ('auto', ) + tuple(BACKENDS)


def nndct_import_error() -> Optional[str]:
    """None when ``pytorch_nndct`` imports, else why it does not."""
    try:
        importlib.import_module('pytorch_nndct')
    except Exception as e:  # ImportError, or a broken install
        return f'{type(e).__name__}: {e}'
    return None


def get_backend(name: str = 'auto', quant_mode: str = 'calib',
                output_dir: str = 'quantize_result', bitwidth: int = 8,
                device='cpu') -> QuantBackend:
    """The backend ``name`` ('auto', 'nndct' or 'builtin') for quant_mode
    'float', 'calib' or 'test'.  Writes nothing."""
    if name not in BACKEND_CHOICES:
        raise UserInputError(
            f'unknown quantization backend {name!r}; choose one of '
            f'{", ".join(BACKEND_CHOICES)}')
    if name == 'auto':
        name = 'nndct' if nndct_import_error() is None else 'builtin'
    elif name == 'nndct':
        err = nndct_import_error()
        if err is not None:
            raise BackendUnavailableError(
                'the nndct backend needs pytorch_nndct (vai_q_pytorch), '
                'which is only available inside the Vitis AI docker image '
                f'(conda env vitis-ai-pytorch); here it does not import '
                f'({err}). Use --backend builtin (the brevitas '
                're-implementation of its DPU arithmetic) or run inside '
                'the Vitis AI docker.')
    return BACKENDS[name](quant_mode=quant_mode, output_dir=output_dir,
                          bitwidth=bitwidth, device=device)
