"""Export a frozen builtin-backend DPU subgraph to a QDQ ONNX model.

One ONNX file per DPU subgraph: float inputs and outputs, every quantized
tensor of the :class:`~.graph.QuantSubgraph` expressed with standard ONNX
``QuantizeLinear`` / ``DequantizeLinear`` (int8, zero point 0, scale
``2**-fix_pos``):

* subgraph inputs and activations (conv / add / cat outputs ...): a
  ``QuantizeLinear -> DequantizeLinear`` pair after the op (after its fused
  ReLU / LeakyReLU), exactly where the builtin backend has a brevitas
  ``QuantIdentity``;
* conv / deconv / linear weights and biases: int8 initializers (the values
  the DPU stores: BN folded, rounded half away from zero, clamped to
  [-128, 127]) feeding a ``DequantizeLinear``; the bias keeps its own
  power-of-two scale (the DPU's int8 bias), it is not re-expressed as
  int32 at ``s_in * s_w``.

Why not ``brevitas.export.export_onnx_qcdq``: in this environment (torch
2.13, brevitas 0.13.4) its TorchScript path needs ``onnxoptimizer`` (not
installed) and its default ``dynamo=True`` path refuses quantized biases
("QCDQ export with `dynamo=True` does not support quantized bias") -- and
needs ``onnxscript``, also absent.  Its weight Q node would also re-quantize
the float weights with ONNX rounding (ties to even) instead of storing the
DPU's half-away-from-zero integers.  So the graph is written here: the
``torch.fx`` graph of the QuantSubgraph is copied with each brevitas module
swapped for a small module whose ``torch.autograd.Function`` has an ONNX
``symbolic`` (explicit QuantizeLinear / DequantizeLinear), then exported
with the TorchScript ONNX exporter (``dynamo=False``).

Rounding: ONNX ``QuantizeLinear`` rounds half to *even*; the DPU (and the
PyTorch fake-quant module) rounds activations half *up* and the network
input half away from zero.  The two agree everywhere except on exact ties
(``x * 2**p`` ending in .5), which happen because a conv's exact result has
``shift = w + i - o`` more fractional bits than its output grid: one value
in ``2**shift`` lands on a tie, and half of those round differently -- by
one LSB, which then propagates through the following convs (3-5 LSB at the
outputs of a SECOND-like net).  Where the exact value's grid is known (a
conv's accumulator, an add / concat of quantized tensors:
:func:`activation_grids`) the export adds half a grid step before
``QuantizeLinear`` -- a standard ``Add`` -- which turns every tie into a
round-up and moves nothing else across a rounding boundary, so
onnxruntime reproduces the DPU's half-up rounding exactly.  Subgraph inputs
(float data rounded half away from zero) get no offset.  :func:`count_ties`
counts ties per quantized tensor and says which are corrected;
:func:`deploy_check` measures onnxruntime against the PyTorch DPU
arithmetic in LSBs (:func:`compare_in_lsb`), and how far plain ONNX
rounding would have been.
"""
import io
import json
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.fileio import atomic_write
from .base import QuantStateError, normalize_inputs
from .dpu_arithmetic import round_half_away, round_half_up
from .graph import (_ADD_FUNCS, _ADD_METHODS, _CAT_FUNCS, QuantSubgraph,
                    _is_grid_act, _is_pass)
from .onnx_boundary import decode_outputs, encode_inputs, read_io_spec

__all__ = ['export_subgraph_onnx', 'build_export_module', 'compare_in_lsb',
           'count_ties', 'deploy_check', 'merge_checks', 'run_onnxruntime',
           'activation_grids', 'ONNX_OPSET', 'TIE_NOTE']

ONNX_OPSET = 17
QMIN, QMAX = -128, 127
# float32 keeps an int8 value + the half-step offset exact up to this shift
MAX_TIE_SHIFT = 24 - 9

TIE_NOTE = (
    'ONNX QuantizeLinear rounds half to even, the DPU rounds activations '
    'half up (and the network input half away from zero): the two differ '
    'only where x * 2**fix_pos is an exact .5 tie with an odd-even mismatch; '
    'there plain ONNX is 1 LSB off, and that difference propagates through '
    'the following layers.  The export adds half a grid step before each '
    'QuantizeLinear whose input grid is known, which makes ties round up; '
    'uncorrected ties remain only in tensors of unknown grid (e.g. the float '
    'network input).')


# --------------------------------------------------------------------------
# ONNX-exportable quantize / dequantize
# --------------------------------------------------------------------------
def _zero_point(g):
    return g.op('Constant', value_t=torch.tensor(0, dtype=torch.int8))


def _scale(g, scale: float):
    return g.op('Constant', value_t=torch.tensor(scale, dtype=torch.float32))


class _QDQFn(torch.autograd.Function):
    """QuantizeLinear -> DequantizeLinear, int8, zero point 0 (ONNX
    semantics in PyTorch too: round half to even, saturate).  ``scale`` is
    a Python float (a power of two): an ONNX Constant.  A nonzero
    ``tie_offset`` is added first (an ONNX ``Add``): see :class:`QDQ`."""

    @staticmethod
    def forward(ctx, x, scale: float, tie_offset: float = 0.0):
        if tie_offset:
            x = x + tie_offset
        return torch.clamp(torch.round(x / scale), QMIN, QMAX) * scale

    @staticmethod
    def symbolic(g, x, scale: float, tie_offset: float = 0.0):
        if tie_offset:
            x = g.op('Add', x, _scale(g, tie_offset))
        q = g.op('QuantizeLinear', x, _scale(g, scale), _zero_point(g))
        return g.op('DequantizeLinear', q, _scale(g, scale), _zero_point(g))


class _DequantFn(torch.autograd.Function):
    """DequantizeLinear of an int8 initializer."""

    @staticmethod
    def forward(ctx, q, scale: float):
        return q.to(torch.float32) * scale

    @staticmethod
    def symbolic(g, q, scale: float):
        return g.op('DequantizeLinear', q, _scale(g, scale), _zero_point(g))


class QDQ(nn.Module):
    """An int8 power-of-two activation quantizer as ONNX Q/DQ.

    ``grid_pos``: the fractional bits of the tensor being quantized when it
    is known to lie on a grid ``2**-grid_pos`` (a conv's accumulator, an
    add / concat of quantized tensors).  If that grid is finer than the
    output's (``grid_pos > fix_pos``), half of a grid step is added before
    ``QuantizeLinear``: an exact .5 tie then rounds up, as the DPU's
    half-up rounding does, and no other value changes rounding (the next
    rounding boundary is a whole grid step away).  In float32 this is exact
    while ``grid_pos - fix_pos + 9 <= 24`` (int8 range plus the offset bit
    in the 24-bit mantissa); beyond that no offset is used.
    """

    def __init__(self, tensor_name: str, fix_pos: int,
                 grid_pos: Optional[int] = None):
        super().__init__()
        self.tensor_name = tensor_name
        self.fix_pos = int(fix_pos)
        self.scale = 2.0**-self.fix_pos
        self.grid_pos = grid_pos
        self.tie_offset = (
            2.0**-(grid_pos + 1) if grid_pos is not None and
            0 < grid_pos - self.fix_pos <= MAX_TIE_SHIFT else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return _QDQFn.apply(x, self.scale, self.tie_offset)


class DQLayer(nn.Module):
    """Conv / deconv / linear with int8 weights (and bias) + their scales."""

    def __init__(self, layer: nn.Module, w_int: Tensor, w_pos: int,
                 b_int: Optional[Tensor], b_pos: Optional[int]):
        super().__init__()
        self.kind = next(k for k, c in (
            ('conv_transpose', nn.ConvTranspose1d),
            ('conv_transpose', nn.ConvTranspose2d), ('conv', nn.Conv1d),
            ('conv', nn.Conv2d), ('linear', nn.Linear))
            if isinstance(layer, c))
        self.dim = 1 if isinstance(layer, (nn.Conv1d,
                                           nn.ConvTranspose1d)) else 2
        for attr in ('stride', 'padding', 'dilation', 'groups',
                     'output_padding'):
            if hasattr(layer, attr):
                setattr(self, attr, getattr(layer, attr))
        self.register_buffer('w_int', w_int.to(torch.int8))
        self.w_scale = 2.0**-w_pos
        self.has_bias = b_int is not None
        if self.has_bias:
            self.register_buffer('b_int', b_int.to(torch.int8))
            self.b_scale = 2.0**-b_pos

    def forward(self, x: Tensor) -> Tensor:
        w = _DequantFn.apply(self.w_int, self.w_scale)
        b = _DequantFn.apply(self.b_int, self.b_scale) if self.has_bias \
            else None
        if self.kind == 'linear':
            return F.linear(x, w, b)
        if self.kind == 'conv':
            fn = F.conv1d if self.dim == 1 else F.conv2d
            return fn(x, w, b, self.stride, self.padding, self.dilation,
                      self.groups)
        fn = F.conv_transpose1d if self.dim == 1 else F.conv_transpose2d
        return fn(x, w, b, self.stride, self.padding, self.output_padding,
                  self.groups, self.dilation)


# --------------------------------------------------------------------------
# QuantSubgraph -> exportable module
# --------------------------------------------------------------------------
def _check_frozen(qmod) -> None:
    if not isinstance(qmod, QuantSubgraph):
        raise UserInputError(
            'ONNX export takes a module wrapped by the builtin backend '
            f'(a QuantSubgraph), got {type(qmod).__name__}')
    scalers = qmod.scalers()
    collecting = [k for k, s in scalers.items() if s.collecting]
    missing = qmod.uncalibrated()
    if missing or collecting:
        what = (f'{len(missing)} quantized tensor(s) have no fix position, '
                f'e.g. {missing[0]!r}' if missing else
                f'it is still collecting calibration statistics (e.g. '
                f'{collecting[0]!r})')
        raise QuantStateError(
            f'DPU subgraph {qmod.subgraph_name!r} is not frozen ({what}): '
            'its fix positions are final only after the calibration run '
            'and export_quant_config() (--quant_mode calib), or when '
            'loaded by --quant_mode test; export to ONNX after that')


def _int_param(value: Tensor, fix_pos: int, key: str) -> Tensor:
    v = value.detach().to(torch.float64) * 2.0**fix_pos
    q = torch.clamp(round_half_away(v), QMIN, QMAX)
    if not torch.isfinite(q).all():
        raise UserInputError(f'{key}: non-finite values')
    return q.to(torch.int8)


def _quantizer_target(path: str) -> str:
    return path.split('.act_quant.')[0]


def activation_grids(qmod: QuantSubgraph) -> 'OrderedDict[str, Optional[int]]':
    """For each quantized activation: the fractional bits of the exact
    value it quantizes (``x`` lies on ``2**-grid``), or None when unknown.

    Walks the graph back from the quantizer's input through grid-keeping
    ops (ReLU, max-pool, reshapes ...): a conv / linear gives
    ``max(fix(in) + fix(w), fix(b))`` (its accumulator with the bias), an
    add or concat of quantized tensors the finest of their grids, another
    quantizer its own fix position.  Anything else (LeakyReLU, average
    pooling, a float input) is unknown.
    """
    gm = qmod.gm
    pos = qmod.fix_positions()
    q_modules = {_quantizer_target(path): key
                 for key, (kind, path) in qmod._tensors.items()
                 if kind in ('input', 'act')}
    convs = {c['module']: c for c in qmod.convs}
    memo: Dict[fx.Node, Optional[int]] = {}

    def finest(nodes) -> Optional[int]:
        grids = [grid(n) for n in nodes]
        if not grids or any(g is None for g in grids):
            return None
        return max(grids)

    def grid(node) -> Optional[int]:
        if not isinstance(node, fx.Node):
            return None
        if node in memo:
            return memo[node]
        memo[node] = None  # guards against cycles
        res = None
        if node.op == 'call_module' and node.target in q_modules:
            res = pos[q_modules[node.target]]
        elif node.op == 'call_module' and node.target in convs:
            conv = convs[node.target]
            g_in = grid(node.args[0]) if node.args else None
            if g_in is not None:
                res = g_in + pos[conv['weight']]
                if conv['bias'] is not None:
                    res = max(res, pos[conv['bias']])
        elif _is_pass(gm, node) or _is_grid_act(gm, node):
            first = next(iter(node.all_input_nodes), None)
            res = grid(first) if first is not None else None
        elif ((node.op == 'call_function' and node.target in _ADD_FUNCS) or
              (node.op == 'call_method' and node.target in _ADD_METHODS)):
            tensors = [a for a in node.args[:2]]
            if all(isinstance(a, fx.Node) for a in tensors):
                res = finest(tensors)
        elif node.op == 'call_function' and node.target in _CAT_FUNCS:
            seq = node.args[0] if node.args else node.kwargs.get('tensors')
            if isinstance(seq, (list, tuple)) and all(
                    isinstance(a, fx.Node) for a in seq):
                res = finest(seq)
        memo[node] = res
        return res

    out = OrderedDict()
    for key, (kind, path) in qmod._tensors.items():
        if kind != 'act':
            continue
        node = next((n for n in gm.graph.nodes if n.op == 'call_module' and
                     n.target == _quantizer_target(path)), None)
        src = node.args[0] if node is not None and node.args else None
        out[key] = grid(src)
    return out


def build_export_module(qmod: QuantSubgraph,
                        dpu_ties: bool = True) -> fx.GraphModule:
    """A copy of ``qmod``'s graph with the brevitas modules replaced by
    :class:`QDQ` / :class:`DQLayer` (ONNX-exportable).

    ``dpu_ties``: activations whose grid is known (:func:`activation_grids`)
    get the tie offset that makes ONNX's half-to-even rounding round ties
    up like the DPU; False gives plain QuantizeLinear (ties to even).
    The int8 weights are checked against brevitas' own quantized weights.
    """
    _check_frozen(qmod)
    gm = qmod.gm
    pos = qmod.fix_positions()
    grids = activation_grids(qmod) if dpu_ties else {}
    replace: Dict[str, nn.Module] = {}
    for key, (kind, path) in qmod._tensors.items():
        if kind in ('input', 'act'):
            replace[_quantizer_target(path)] = QDQ(key, pos[key],
                                                   grids.get(key))
    for conv in qmod.convs:
        target = conv['module']
        if target in replace:
            continue
        layer = gm.get_submodule(target)
        if getattr(layer, 'padding_mode', 'zeros') != 'zeros':
            raise UserInputError(
                f'{target}: padding_mode {layer.padding_mode!r} is not '
                'exported (only zeros)')
        w_pos = pos[conv['weight']]
        w_int = _int_param(layer.weight, w_pos, conv['weight'])
        with torch.no_grad():
            ref = layer.quant_weight().value.detach().double()
        if not torch.equal(w_int.double() * 2.0**-w_pos, ref):
            raise RuntimeError(
                f'{conv["weight"]}: int8 weights do not reproduce brevitas '
                'quantized weights')
        b_int = b_pos = None
        if conv['bias'] is not None:
            b_pos = pos[conv['bias']]
            b_int = _int_param(layer.bias, b_pos, conv['bias'])
        replace[target] = DQLayer(layer, w_int, w_pos, b_int, b_pos)
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    root: Dict[str, object] = {}
    for node in graph.nodes:
        if node.op == 'call_module':
            mod = replace.get(node.target, gm.get_submodule(node.target))
            if type(mod).__module__.startswith('brevitas'):
                raise UserInputError(
                    f'{node.target}: brevitas module '
                    f'{type(mod).__name__} has no ONNX QDQ export here')
            root[node.target] = mod
        elif node.op == 'get_attr':
            root[node.target] = _get_attr(gm, node.target)
    return fx.GraphModule(root, graph, f'{qmod.subgraph_name}_qdq').eval()


def _get_attr(gm, target: str):
    obj = gm
    for part in target.split('.'):
        obj = getattr(obj, part)
    return obj


def _output_tensors(qmod: QuantSubgraph) -> List[Optional[str]]:
    """For each graph output, the quantized tensor whose grid it lies on
    (None when the output is not quantized)."""
    gm = qmod.gm
    q_modules = {_quantizer_target(path): key
                 for key, (kind, path) in qmod._tensors.items()
                 if kind in ('input', 'act')}

    def source(node) -> Optional[str]:
        for _ in range(1000):
            if not isinstance(node, fx.Node):
                return None
            if node.op == 'call_module' and node.target in q_modules:
                return q_modules[node.target]
            if _is_pass(gm, node) or _is_grid_act(gm, node):
                node = next(iter(node.all_input_nodes), None)
                continue
            return None
        return None

    out_node = next(n for n in gm.graph.nodes if n.op == 'output')
    res = out_node.args[0]
    flat = list(res) if isinstance(res, (tuple, list)) else [res]
    return [source(n) for n in flat]


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------
def export_subgraph_onnx(qmod: QuantSubgraph, example_inputs, path: str,
                         opset_version: int = ONNX_OPSET) -> dict:
    """Write ``qmod`` (frozen) to ``path`` as a QDQ ONNX model, atomically.

    The model is checked with ``onnx.checker.check_model(full_check=True)``
    before anything is written.  Returns ``dict(path, subgraph, opset,
    inputs=[{name, tensor, fix_pos, scale}], outputs=[{name, tensor,
    fix_pos, scale}], tensors={key: {kind, fix_pos, scale}},
    n_quantize_linear, n_dequantize_linear)``.
    """
    import onnx

    if qmod.scalers() and any(
            s.bit_width != 8 for s in qmod.scalers().values()):
        raise UserInputError('ONNX QDQ export supports 8-bit subgraphs only')
    export_mod = build_export_module(qmod)
    example_inputs = normalize_inputs(example_inputs)
    pos = qmod.fix_positions()
    in_keys = [k for k, kind in qmod.tensors.items() if kind == 'input']
    out_keys = _output_tensors(qmod)
    in_names = [f'input_{i}' for i in range(len(example_inputs))]
    out_names = [f'output_{i}' for i in range(len(out_keys))]
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(export_mod, tuple(example_inputs), buf,
                          dynamo=False, opset_version=opset_version,
                          input_names=in_names, output_names=out_names,
                          do_constant_folding=False)
    model = onnx.load_from_string(buf.getvalue())

    def entry(name, key):
        p = pos.get(key) if key else None
        return OrderedDict(name=name, tensor=key, fix_pos=p,
                           scale=None if p is None else 2.0**-p)

    # subgraph inputs are quantized in input order (placeholders first)
    info = OrderedDict(
        path=str(path), subgraph=qmod.subgraph_name, opset=opset_version,
        inputs=[entry(n, in_keys[i] if i < len(in_keys) else None)
                for i, n in enumerate(in_names)],
        outputs=[entry(n, k) for n, k in zip(out_names, out_keys)],
        tensors=OrderedDict(
            (k, dict(kind=kind, fix_pos=pos[k], scale=2.0**-pos[k]))
            for k, kind in qmod.tensors.items()))
    ops = [n.op_type for n in model.graph.node]
    info['n_quantize_linear'] = ops.count('QuantizeLinear')
    info['n_dequantize_linear'] = ops.count('DequantizeLinear')
    meta = model.metadata_props.add()
    meta.key = 'mmdet3d_vitis.dpu_quant'
    meta.value = json.dumps(dict(
        subgraph=qmod.subgraph_name, inputs=info['inputs'],
        outputs=info['outputs'], fix_pos=dict(pos),
        rounding='ONNX QuantizeLinear: half to even; DPU activations: half '
        'up, network input: half away from zero'))
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    atomic_write(str(path), lambda f: f.write(data))
    return info


# --------------------------------------------------------------------------
# deploy check
# --------------------------------------------------------------------------
def run_onnxruntime(path: str, inputs) -> List[np.ndarray]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts,
                                providers=['CPUExecutionProvider'])
    # int8 / NHWC boundaries (onnx_boundary): float NCHW in and out here
    spec = read_io_spec(str(path))
    arrays = encode_inputs(spec, [t.detach().cpu().numpy()
                                  for t in normalize_inputs(inputs)])
    feed = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
    return decode_outputs(spec, sess.run(None, feed))


def _as_list(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def compare_in_lsb(torch_outputs, ort_outputs,
                   scales: Sequence[Optional[float]]) -> List[dict]:
    """Per output: the difference in LSBs of that output's scale.

    Returns dicts ``index, shape, scale, numel, max_abs_lsb, n_differ,
    share_differ, n_over_1_lsb`` (``scale`` None: absolute units).
    """
    torch_outputs, ort_outputs = _as_list(torch_outputs), _as_list(
        ort_outputs)
    if not len(torch_outputs) == len(ort_outputs) == len(scales):
        raise ValueError(
            f'{len(torch_outputs)} torch outputs, {len(ort_outputs)} ORT '
            f'outputs, {len(scales)} scales')
    res = []
    for i, (t, o, s) in enumerate(zip(torch_outputs, ort_outputs, scales)):
        t = (t.detach().cpu().numpy() if isinstance(t, Tensor) else
             np.asarray(t)).astype(np.float64)
        o = np.asarray(o, dtype=np.float64)
        if t.shape != o.shape:
            raise ValueError(f'output {i}: shape {t.shape} vs {o.shape}')
        d = np.abs(o - t) / (s if s else 1.0)
        n_diff = int(np.count_nonzero(d))
        res.append(OrderedDict(
            index=i, shape=tuple(t.shape), scale=s, numel=int(t.size),
            max_abs_lsb=float(d.max()) if d.size else 0.0,
            n_differ=n_diff,
            share_differ=n_diff / t.size if t.size else 0.0,
            n_over_1_lsb=int(np.count_nonzero(d > 1))))
    return res


def _round_half_even(v: Tensor) -> Tensor:
    return torch.round(v)  # torch.round: ties to even (like ONNX)


def count_ties(qmod: QuantSubgraph, inputs) -> List[dict]:
    """Run ``qmod`` (PyTorch, DPU arithmetic) on ``inputs`` and count, per
    quantized input / activation tensor, the exact .5 ties of ``x * 2**p``,
    how many of them plain ONNX QuantizeLinear (half to even) rounds
    differently from the DPU, and whether the export corrects them there
    (``tie_corrected``: the tensor's :class:`QDQ` has a tie offset).
    """
    _check_frozen(qmod)
    pos = qmod.fix_positions()
    grids = activation_grids(qmod)
    stats, hooks = OrderedDict(), []
    for key, (kind, path) in qmod._tensors.items():
        if kind not in ('input', 'act'):
            continue
        mod = qmod.gm.get_submodule(_quantizer_target(path))
        corrected = bool(QDQ(key, pos[key], grids.get(key)).tie_offset)
        st = stats[key] = OrderedDict(tensor=key, kind=kind,
                                      fix_pos=pos[key], numel=0, n_ties=0,
                                      n_round_differ=0,
                                      tie_corrected=corrected)
        dpu_round = round_half_up if kind == 'act' else round_half_away

        def hook(_m, args, st=st, p=pos[key], rnd=dpu_round):
            v = args[0].detach().double() * 2.0**p
            inside = (v >= QMIN - 0.5) & (v <= QMAX + 0.5)
            tie = ((v - torch.trunc(v)).abs() == 0.5) & inside
            a = torch.clamp(rnd(v), QMIN, QMAX)
            b = torch.clamp(_round_half_even(v), QMIN, QMAX)
            st['numel'] += v.numel()
            st['n_ties'] += int(tie.sum())
            st['n_round_differ'] += int((a != b).sum())

        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            qmod(*normalize_inputs(inputs))
    finally:
        for h in hooks:
            h.remove()
    return list(stats.values())


def deploy_check(qmod: QuantSubgraph, onnx_path: str, inputs,
                 scales: Sequence[Optional[float]]) -> dict:
    """For the same ``inputs``: onnxruntime running the exported file vs
    the PyTorch fake-quant module (DPU rounding), per output in LSBs
    (``vs_dpu``), and vs the same graph exported without tie offsets
    (plain QuantizeLinear, ``vs_half_even``, how far ONNX's own rounding
    would be), plus the tie counts that explain any difference
    (``n_round_differ``: ties ONNX alone would round differently;
    ``n_uncorrected``: those in tensors the export could not correct).
    """
    inputs = normalize_inputs(inputs)
    with torch.no_grad():
        dpu = _as_list(qmod(*inputs))
        half_even = _as_list(build_export_module(qmod,
                                                 dpu_ties=False)(*inputs))
    ort_out = run_onnxruntime(onnx_path, inputs)
    ties = count_ties(qmod, inputs)
    return OrderedDict(
        vs_dpu=compare_in_lsb(dpu, ort_out, scales),
        vs_half_even=compare_in_lsb(half_even, dpu, scales),
        ties=ties,
        n_ties=sum(t['n_ties'] for t in ties),
        n_round_differ=sum(t['n_round_differ'] for t in ties),
        n_uncorrected=sum(t['n_round_differ'] for t in ties
                          if not t['tie_corrected']),
        note=TIE_NOTE)


def merge_checks(checks: Sequence[dict]) -> dict:
    """:func:`deploy_check` results of several frames as one: per output
    the worst ``max_abs_lsb`` and the summed element counts."""
    checks = list(checks)
    if not checks:
        raise ValueError('no deploy checks to merge')

    def merge_cmp(lists):
        out = []
        for rows in zip(*lists):
            r = OrderedDict(rows[0])
            r['numel'] = sum(x['numel'] for x in rows)
            r['n_differ'] = sum(x['n_differ'] for x in rows)
            r['n_over_1_lsb'] = sum(x['n_over_1_lsb'] for x in rows)
            r['max_abs_lsb'] = max(x['max_abs_lsb'] for x in rows)
            r['share_differ'] = r['n_differ'] / r['numel'] if r[
                'numel'] else 0.0
            out.append(r)
        return out

    ties = []
    for rows in zip(*[c['ties'] for c in checks]):
        t = OrderedDict(rows[0])
        for k in ('numel', 'n_ties', 'n_round_differ'):
            t[k] = sum(x[k] for x in rows)
        ties.append(t)
    merged = OrderedDict(
        frames=len(checks),
        vs_dpu=merge_cmp([c['vs_dpu'] for c in checks]),
        vs_half_even=merge_cmp([c['vs_half_even'] for c in checks]),
        ties=ties)
    for k in ('n_ties', 'n_round_differ', 'n_uncorrected'):
        merged[k] = sum(c[k] for c in checks)
    merged['note'] = checks[0]['note']
    return merged


def format_report(check: dict, names: Optional[Sequence[str]] = None) -> str:
    """A short text report of :func:`deploy_check` / :func:`merge_checks`."""
    lines = []
    for r in check['vs_dpu']:
        name = names[r['index']] if names else f'output_{r["index"]}'
        lines.append(
            f'{name}: max |ORT - DPU fake-quant| = {r["max_abs_lsb"]:g} LSB'
            f' (scale {r["scale"]}), {r["n_differ"]}/{r["numel"]} elements '
            f'differ ({100 * r["share_differ"]:.3f}%)')
    he = max((r['max_abs_lsb'] for r in check['vs_half_even']), default=0)
    n_fixed = sum(1 for t in check['ties'] if t['tie_corrected'])
    lines.append(
        f'{check["n_ties"]} exact .5 ties in quantized tensors; plain ONNX '
        f'QuantizeLinear (half to even) would round {check["n_round_differ"]}'
        f' of them differently from the DPU (half up), up to {he:g} LSB at '
        f'the outputs; the export corrects ties in {n_fixed}/'
        f'{len(check["ties"])} quantized tensors (tie offset before '
        f'QuantizeLinear), {check["n_uncorrected"]} ties left uncorrected. '
        + check['note'])
    return '\n'.join(lines)
