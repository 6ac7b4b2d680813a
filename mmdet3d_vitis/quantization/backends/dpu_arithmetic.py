"""The DPU's int8 arithmetic, expressed as brevitas quantizers.

What vai_q_pytorch (``pytorch_nndct``, Vitis AI 3.x) does for a DPU target,
and what this module reproduces:

* every quantized tensor is signed, per-tensor, power-of-two scaled: an
  integer *fix position* ``p`` gives ``scale = 2**-p`` and
  ``q = clamp(round(x * 2**p), -2**(b-1), 2**(b-1) - 1)`` -- the full range,
  ``[-128, 127]`` at 8 bit (nndct's default qconfig has ``narrow_range:
  False`` for weights, bias, activations and inputs alike);
* rounding (nndct's ``round_method``): activations ``half_up`` (kernel method
  2: ties go to +inf, the DPU's shift-and-round), weights, biases and the
  network input ``std_round`` (method 3, C ``round()``: ties away from zero);
* fix positions by the ``diffs`` method: start at the overflow-safe position
  ``floor(log2(1 / max(x_min / -(2**(b-1) + .5), x_max / (2**(b-1) - .5))))``
  (18 for an all-zero tensor), try it and the next ``scope - 1`` positions,
  keep the one with the least sum of squared errors (first one on ties);
  ``scope`` is 5, and 1 for the network input; the result is capped at 12
  (``nndct_max_fix_position``; 15 above 8 bit);
* activations: one diffs position per calibration batch, the final position
  is the most frequent one over all batches (``calib_statistic_method:
  modal``; ties go to the smallest, like ``scipy.stats.mode``); parameters:
  computed once from the (BN-folded) tensor;
* after calibration the DPU's shifter limits are enforced per conv
  (``shift_cut = w + i - o`` in ``[0, 16]``, ``shift_bias = w + i - b`` in
  ``[min(0, -(24 - (8 + shift_cut))), 16]``), moving o, w or b like nndct's
  ``_node_relative_fix_pos_check``;
* LeakyReLU runs with slope 26/256 = 0.1015625.

Brevitas performs the quantization: the quantizers below are brevitas
injectors (``brevitas.quant.fixed_point`` fixed-point quantizers, i.e.
``RescalingIntQuant`` over ``IntQuant`` with ``TensorClamp``), with two
parts swapped in: the scale comes from :class:`FixPosScaling` (a stored or
calibrated fix position) and ``float_to_int_impl`` is one of the rounding
STEs below.  Brevitas' own ``DPURoundSte`` is not used: its
``brevitas.function.ops.dpu_round`` falls back to ``torch.round`` (ties to
even) for positive ties, so it gives 2 for 2.5 where nndct's kernel (C
``round()``) and the DPU give 3.
"""
from collections import Counter
from typing import List, Optional

import torch
from torch import Tensor, nn

import brevitas
from brevitas.core.function_wrapper import Identity, TensorClamp
from brevitas.core.quant import IntQuant
from brevitas.inject import ExtendedInjector
from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint, Int8BiasPerTensorFixedPointInternalScaling,
    Int8WeightPerTensorFixedPoint)

from mmdet3d_vitis.errors import UserInputError
from .base import QuantStateError

__all__ = [
    'LEAKY_RELU_SLOPE', 'DIFFS_SCOPE', 'INPUT_DIFFS_SCOPE', 'ALL_ZERO_FIX_POS',
    'round_half_up', 'round_half_away', 'RoundHalfUpSte', 'RoundHalfAwaySte',
    'max_fix_pos', 'overflow_safe_fix_pos', 'diffs_fix_pos', 'modal_fix_pos',
    'FixPosScaling', 'DPUInputQuant', 'DPUActQuant', 'DPUWeightQuant',
    'DPUBiasQuant', 'conv_shift_adjust'
]

#: The DPU's LeakyReLU slope (26 / 256); vai_q forces every LeakyReLU to it.
LEAKY_RELU_SLOPE = 26.0 / 256.0
#: Candidate fix positions the diffs method tries (nndct ``scope``).
DIFFS_SCOPE = 5
#: The network input is only given its overflow-safe position (scope 1).
INPUT_DIFFS_SCOPE = 1
#: nndct's position for an all-zero tensor (before the cap).
ALL_ZERO_FIX_POS = 18


# --------------------------------------------------------------------------
# rounding
# --------------------------------------------------------------------------
def round_half_up(x: Tensor) -> Tensor:
    """Round to nearest, ties towards +inf (nndct method 2, ``half_up``).

    ``x - trunc(x)`` is exact in floating point, so ties are detected
    exactly (``floor(x + 0.5)`` would round 0.49999997 up to 1).
    """
    frac = x - torch.trunc(x)
    return torch.where(frac.abs() == 0.5, torch.ceil(x), torch.round(x))


def round_half_away(x: Tensor) -> Tensor:
    """Round to nearest, ties away from zero (nndct method 3, C ``round``)."""
    frac = x - torch.trunc(x)
    return torch.where(frac.abs() == 0.5,
                       torch.trunc(x) + torch.sign(x), torch.round(x))


def _ste(x: Tensor, y: Tensor) -> Tensor:
    # value y, gradient 1 wrt x.  Exact: |y - x| <= .5 so y - x is exact
    # (Sterbenz, or x already integral) and x + (y - x) == y.
    return x + (y - x).detach()


class RoundHalfUpSte(brevitas.jit.ScriptModule):
    """brevitas ``float_to_int_impl``: half-up rounding, straight-through."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return _ste(x, round_half_up(x))


class RoundHalfAwaySte(brevitas.jit.ScriptModule):
    """brevitas ``float_to_int_impl``: C ``round()``, straight-through."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return _ste(x, round_half_away(x))


# --------------------------------------------------------------------------
# fix position search
# --------------------------------------------------------------------------
def max_fix_pos(bit_width: int) -> int:
    """nndct caps fix positions at 12 up to 8 bit, 15 above."""
    return 12 if bit_width <= 8 else 15


def overflow_safe_fix_pos(x: Tensor, bit_width: int = 8) -> int:
    """Largest p with x_max * 2**p <= 2**(b-1) - .5 and x_min * 2**p >=
    -2**(b-1) - .5 (nndct's ``max_scale``); 18 for an all-zero tensor."""
    x = x.detach()
    abs_max = float(1 << (bit_width - 1))
    x_max = torch.max(x).to(torch.float32)
    x_min = torch.min(x).to(torch.float32)
    if not bool(torch.isfinite(x_max) & torch.isfinite(x_min)):
        raise ValueError('cannot quantize a tensor holding inf or nan')
    step = torch.max(x_min / (-abs_max - 0.5), x_max / (abs_max - 0.5))
    if not bool(step > torch.finfo(torch.float32).tiny):
        return ALL_ZERO_FIX_POS
    return int(torch.floor(torch.log2(1.0 / step)).item())


def _int_quant(float_to_int_impl: nn.Module) -> IntQuant:
    return IntQuant(narrow_range=False, signed=True,
                    input_view_impl=Identity(),
                    float_to_int_impl=float_to_int_impl,
                    tensor_clamp_impl=TensorClamp())


def diffs_fix_pos(x: Tensor, bit_width: int = 8, scope: int = DIFFS_SCOPE,
                  float_to_int_impl: Optional[nn.Module] = None,
                  int_quant: Optional[IntQuant] = None) -> int:
    """vai_q's ``diffs`` fix position of one tensor (capped, see module doc).

    The candidates are quantized by brevitas' ``IntQuant`` with the given
    rounding, i.e. by exactly the arithmetic used in the forward pass.
    """
    x = x.detach()
    p0 = overflow_safe_fix_pos(x, bit_width)
    best = p0
    if scope > 1:
        if int_quant is None:
            int_quant = _int_quant(float_to_int_impl or RoundHalfUpSte())
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        bw = torch.tensor(float(bit_width), dtype=x.dtype, device=x.device)
        best_err = None
        for p in range(p0, p0 + scope):
            scale = torch.tensor(2.0 ** -p, dtype=x.dtype, device=x.device)
            err = torch.sum((x - int_quant(scale, zero, bw, x)) ** 2).item()
            if best_err is None or err < best_err:
                best, best_err = p, err
    return min(best, max_fix_pos(bit_width))


def modal_fix_pos(history: List[int]) -> int:
    """Most frequent fix position, the smallest one on ties (scipy mode)."""
    counts = Counter(history)
    top = max(counts.values())
    return min(p for p, c in counts.items() if c == top)


# --------------------------------------------------------------------------
# brevitas scaling impl holding a fix position
# --------------------------------------------------------------------------
class FixPosScaling(nn.Module):
    """brevitas ``scaling_impl`` returning ``2**-fix_pos``.

    The fix position is a buffer (so it travels in ``state_dict``).  While
    ``collecting`` is set, each forward runs the diffs search on the tensor
    being quantized: activations/inputs append to a history and use its
    mode, parameters compute their position once (when still unset, i.e.
    NaN).  Once frozen the stored position is used as is.
    """

    def __init__(self, bit_width: int, float_to_int_impl: nn.Module,
                 dpu_tensor_kind: str, dpu_diffs_scope: int):
        super().__init__()
        self.bit_width = int(bit_width)
        self.kind = dpu_tensor_kind
        self.scope = int(dpu_diffs_scope)
        self.int_quant = _int_quant(float_to_int_impl)
        self.register_buffer('fix_pos', torch.tensor(float('nan')))
        self.collecting = False
        self.history: List[int] = []
        self.tensor_name = ''  # set by the graph builder, for messages

    @property
    def is_param(self) -> bool:
        return self.kind in ('weight', 'bias')

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.fix_pos))

    def get_fix_pos(self) -> int:
        return int(self.fix_pos.item())

    def set_fix_pos(self, p: int) -> None:
        self.fix_pos.fill_(float(p))

    def reset(self) -> None:
        self.fix_pos.fill_(float('nan'))
        self.history = []

    def observe(self, x: Tensor) -> None:
        if x.numel() == 0:
            return  # nothing to learn from (e.g. zero voxels)
        try:
            with torch.no_grad():
                p = diffs_fix_pos(x, self.bit_width, self.scope,
                                  int_quant=self.int_quant)
        except ValueError as e:
            raise UserInputError(
                f'calibration of {self.tensor_name or self.kind}: {e}'
            ) from e
        if self.is_param:
            self.set_fix_pos(p)
        else:
            self.history.append(p)
            self.set_fix_pos(modal_fix_pos(self.history))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # a float layer's state (brevitas ModuleToModule* loads it into the
        # new quant layer) has no fix position: leave it unset
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + 'fix_pos'
        if key in missing_keys:
            missing_keys.remove(key)

    def forward(self, x: Tensor, *args) -> Tensor:
        if self.collecting and (not self.is_param or not self.calibrated):
            self.observe(x)
        if not self.calibrated:
            if x.numel() == 0:  # nothing to quantize
                return torch.ones((), dtype=x.dtype, device=x.device)
            raise QuantStateError(
                f'quantizer of {self.tensor_name or self.kind} has no fix '
                'position: it was never calibrated')
        return torch.exp2(-self.fix_pos.to(device=x.device, dtype=x.dtype))


# --------------------------------------------------------------------------
# brevitas quantizers (injectors)
# --------------------------------------------------------------------------
class _DPUQuantMixin(ExtendedInjector):
    narrow_range = False
    signed = True
    bit_width = 8
    scaling_impl = FixPosScaling
    dpu_diffs_scope = DIFFS_SCOPE


class DPUActQuant(_DPUQuantMixin, Int8ActPerTensorFixedPoint):
    """Activation (conv/add/cat output): half-up rounding."""
    float_to_int_impl = RoundHalfUpSte
    dpu_tensor_kind = 'act'


class DPUInputQuant(_DPUQuantMixin, Int8ActPerTensorFixedPoint):
    """Subgraph input: C ``round()``, overflow-safe position only."""
    float_to_int_impl = RoundHalfAwaySte
    dpu_tensor_kind = 'input'
    dpu_diffs_scope = INPUT_DIFFS_SCOPE


class DPUWeightQuant(_DPUQuantMixin, Int8WeightPerTensorFixedPoint):
    """Conv weights (BN folded): C ``round()``."""
    float_to_int_impl = RoundHalfAwaySte
    dpu_tensor_kind = 'weight'


class DPUBiasQuant(_DPUQuantMixin, Int8BiasPerTensorFixedPointInternalScaling):
    """Conv bias (BN folded), its own power-of-two position: C ``round()``."""
    float_to_int_impl = RoundHalfAwaySte
    dpu_tensor_kind = 'bias'


def with_bit_width(quant, bit_width: int):
    """The injector ``quant`` at another bit width."""
    if bit_width == 8:
        return quant
    return quant.let(bit_width=bit_width)


# --------------------------------------------------------------------------
# DPU shifter limits
# --------------------------------------------------------------------------
def conv_shift_adjust(i: int, w: int, o: int, b: Optional[int]):
    """nndct's ``_node_relative_fix_pos_check`` for one conv.

    Returns the (possibly moved) ``(w, o, b)`` fix positions.
    """
    shift_cut = w + i - o
    if shift_cut < 0:
        o = o + shift_cut
    elif shift_cut > 16:
        w = w - shift_cut + 16
    if b is not None:
        shift_bias = w + i - b
        shift_bias_min = min(0, -(24 - (8 + shift_cut)))
        if shift_bias < shift_bias_min:
            b = b + shift_bias - shift_bias_min
        elif shift_bias > 16:
            w = w - shift_bias + 16
    return w, o, b
