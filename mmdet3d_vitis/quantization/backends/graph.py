"""Turn a float DPU subgraph into a brevitas int8 fake-quant graph.

:func:`build_quant_subgraph` traces a tensor-in/tensor-out module with
``torch.fx`` and rewrites it the way vai_q_pytorch quantizes for a DPU:

1. BatchNorm is folded into the preceding Conv/ConvTranspose/Linear
   (brevitas ``MergeBatchNorm``), before any weight is quantized;
2. LeakyReLU slopes are set to the DPU's 26/256;
3. Conv2d / Conv1d / ConvTranspose2d / Linear become brevitas ``QuantConv2d``
   ... with the DPU weight and bias quantizers (brevitas
   ``ModuleToModuleByName``);
4. a brevitas ``QuantIdentity`` (DPU activation quantizer) is inserted
   (brevitas ``InsertModuleCallAfter``) after each subgraph input and after
   every op that computes new values: conv / linear, add, cat, non-nearest
   interpolation and any other float op -- after the ReLU / ReLU6 /
   LeakyReLU that directly follows it when there is one (conv+bn+relu is one
   quantized output, like nndct's fused nodes);
5. ops that only move, select or compare already-quantized values keep the
   scale of their input: max / amax / max-pool, nearest resize, zero pad,
   view / reshape / permute / expand / repeat / slicing / split, and a
   ReLU / ReLU6 applied to a quantized tensor.

The result, :class:`QuantSubgraph`, has the module's call signature and
knows every quantized tensor by an nndct-style name
(``"<name>::input_0"``, ``"<name>::<name>/<Class>[attr]/.../weight"``).
"""
import copy
import hashlib
import operator
import re
import warnings
from collections import OrderedDict
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from mmdet3d_vitis.errors import UserInputError
from .base import QuantStateError
from .dpu_arithmetic import (LEAKY_RELU_SLOPE, DPUActQuant, DPUBiasQuant,
                             DPUInputQuant, DPUWeightQuant, FixPosScaling,
                             conv_shift_adjust, with_bit_width)

with warnings.catch_warnings():
    # brevitas.graph imports the deprecated brevitas.fx backport; the graph
    # passes used here work on torch.fx graphs.
    warnings.simplefilter('ignore', DeprecationWarning)
    warnings.filterwarnings('ignore', message='.*fast_hadamard_transform')
    import brevitas.nn as qnn
    from brevitas.graph.base import ModuleToModuleByName
    from brevitas.graph.utils import get_output_channel_dim
    from brevitas.nn.utils import merge_bn

__all__ = ['QuantSubgraph', 'build_quant_subgraph', 'fold_batchnorm',
           'trace_subgraph', 'module_fingerprint']

# --------------------------------------------------------------------------
# op classification
# --------------------------------------------------------------------------
_QUANT_LAYERS = OrderedDict([
    (nn.Conv1d, qnn.QuantConv1d),
    (nn.Conv2d, qnn.QuantConv2d),
    (nn.ConvTranspose1d, qnn.QuantConvTranspose1d),
    (nn.ConvTranspose2d, qnn.QuantConvTranspose2d),
    (nn.Linear, qnn.QuantLinear),
])
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
_ACT_FUNCS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.leaky_relu_,
              torch.relu_}
_ACT_METHODS = {'relu', 'relu_'}
# ReLU / ReLU6 of a quantized tensor stays on its grid.
_GRID_ACT_MODULES = (nn.ReLU, nn.ReLU6)
_GRID_ACT_FUNCS = {F.relu, torch.relu, F.relu6, torch.relu_}

_PASS_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout, nn.Dropout2d,
                 nn.Flatten, nn.Unflatten, nn.ZeroPad2d)
_PASS_FUNCS = {
    operator.getitem, getattr, torch.max, torch.amax, torch.flatten,
    torch.reshape, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.split, torch.chunk, torch.narrow, torch.t,
    torch.cummax, F.max_pool1d, F.max_pool2d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.dropout, torch.clone
}
_PASS_METHODS = {
    'max', 'amax', 'view', 'view_as', 'reshape', 'reshape_as', 'permute',
    'transpose', 'contiguous', 'expand', 'expand_as', 'repeat', 'squeeze',
    'unsqueeze', 'flatten', 'unflatten', 'split', 'chunk', 'narrow', 'clone',
    'detach', 'float', 't', 'type_as', 'to'
}
_CONV_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d)
_LEAF_TYPES = (tuple(_QUANT_LAYERS) + _ACT_MODULES + _PASS_MODULES +
               (nn.modules.batchnorm._BatchNorm, nn.Upsample))
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {'add', 'add_'}
_CAT_FUNCS = {torch.cat, torch.concat}
_RESIZE_FUNCS = {F.interpolate, F.upsample, F.upsample_nearest}


def _module(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    if node.op == 'call_module':
        return gm.get_submodule(node.target)
    return None


def _is_float_tensor(node: fx.Node) -> bool:
    meta = node.meta.get('tensor_meta')
    return isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point


def _is_act(gm, node) -> bool:
    if node.op == 'call_module':
        return isinstance(_module(gm, node), _ACT_MODULES)
    if node.op == 'call_function':
        return node.target in _ACT_FUNCS
    return node.op == 'call_method' and node.target in _ACT_METHODS


def _is_grid_act(gm, node) -> bool:
    if node.op == 'call_module':
        return isinstance(_module(gm, node), _GRID_ACT_MODULES)
    if node.op == 'call_function':
        return node.target in _GRID_ACT_FUNCS
    return node.op == 'call_method' and node.target in _ACT_METHODS


def _resize_mode(node) -> str:
    """interpolate / upsample(input, size, scale_factor, mode, ...)."""
    if 'mode' in node.kwargs:
        return node.kwargs['mode']
    if node.target is not F.upsample_nearest and len(node.args) > 3:
        return node.args[3]
    return 'nearest'


def _binary_max(node) -> bool:
    """torch.max(a, b) / a.max(b): elementwise over two tensors."""
    other = node.args[1] if len(node.args) > 1 else node.kwargs.get('other')
    return isinstance(other, fx.Node)


def _is_pass(gm, node) -> bool:
    """Ops whose float output lies on the grid of their (quantized) input."""
    if node.op == 'call_module':
        mod = _module(gm, node)
        if isinstance(mod, nn.Upsample):
            return mod.mode == 'nearest'
        return isinstance(mod, _PASS_MODULES)
    if node.op == 'call_function':
        if node.target in _RESIZE_FUNCS:
            return _resize_mode(node) == 'nearest'
        if node.target is F.pad:
            mode = node.kwargs.get('mode', node.args[2]
                                   if len(node.args) > 2 else 'constant')
            value = node.kwargs.get('value', node.args[3]
                                    if len(node.args) > 3 else None)
            return mode == 'constant' and not value
        if node.target is torch.max and _binary_max(node):
            return False
        return node.target in _PASS_FUNCS
    if node.op == 'call_method':
        if node.target == 'max' and _binary_max(node):
            return False
        return node.target in _PASS_METHODS
    return False


def _op_label(gm, node) -> str:
    if node.op == 'call_module':
        return type(_module(gm, node)).__name__
    return getattr(node.target, '__name__', str(node.target))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def module_fingerprint(module: nn.Module) -> str:
    """sha256 over the module's state_dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        if isinstance(value, Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f'{t.dtype}{tuple(t.shape)}'.encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _scope_names(model: nn.Module) -> Dict[str, str]:
    """Module path -> nndct scope ``Class[attr]/Class[attr]/...``."""
    scopes = {'': ''}
    for path, mod in model.named_modules():
        if not path:
            continue
        parent, _, attr = path.rpartition('.')
        own = f'{type(mod).__name__}[{attr}]'
        scopes[path] = f'{scopes[parent]}/{own}' if scopes[parent] else own
    return scopes


class _DPUTracer(fx.Tracer):
    """Keeps every conv / BN / activation / pooling module a leaf, also the
    subclasses outside ``torch.nn`` (mmcv's ``ConvTranspose2d`` wrapper
    would otherwise be traced into a bare ``F.conv_transpose2d``)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAF_TYPES) or super().is_leaf_module(
            m, qualname)


def trace_subgraph(name: str, module: nn.Module,
                   example_inputs: Sequence[Tensor]) -> fx.GraphModule:
    """``torch.fx`` trace with shapes/dtypes recorded from example_inputs."""
    try:
        graph = _DPUTracer().trace(module)
        gm = fx.GraphModule(module, graph, type(module).__name__)
    except Exception as e:  # torch.fx raises many types
        raise UserInputError(
            f'DPU subgraph {name!r} ({type(module).__name__}) cannot be '
            f'traced by torch.fx, which the builtin quantizer needs: '
            f'{type(e).__name__}: {e}') from e
    n_in = sum(1 for n in gm.graph.nodes if n.op == 'placeholder')
    if n_in != len(example_inputs):
        raise UserInputError(
            f'DPU subgraph {name!r} takes {n_in} inputs but '
            f'{len(example_inputs)} example inputs were given')
    with torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)
    return gm


def _out_channels(layer: nn.Module) -> int:
    return layer.weight.shape[get_output_channel_dim(layer)]


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold each BatchNorm into the conv / linear feeding only it.

    The folding is brevitas' ``merge_bn`` (``MergeBatchNorm``'s arithmetic;
    ConvTranspose along its output-channel dim); brevitas' graph pass itself
    only accepts graphs of its deprecated ``brevitas.fx`` backport, so the
    matching is done here on the ``torch.fx`` graph.  BN in eval mode only
    (running statistics); a BN after anything else stays (and is quantized
    as an unknown op).
    """
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if (not isinstance(bn, nn.modules.batchnorm._BatchNorm)
                or bn.running_mean is None):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            continue
        layer = _module(gm, src)
        if (not isinstance(layer, tuple(_QUANT_LAYERS))
                or isinstance(layer, _CONV_TRANSPOSED)
                and layer.groups != 1
                or _out_channels(layer) != bn.num_features):
            continue
        if not bn.affine:  # merge_bn reads weight / bias
            n = bn.num_features
            bn = SimpleNamespace(
                running_mean=bn.running_mean, running_var=bn.running_var,
                eps=bn.eps, weight=torch.ones_like(bn.running_mean[:n]),
                bias=torch.zeros_like(bn.running_mean[:n]))
        with torch.no_grad():
            merge_bn(layer, bn, get_output_channel_dim(layer))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        parent, _, attr = node.target.rpartition('.')
        delattr(gm.get_submodule(parent) if parent else gm, attr)
    gm.graph.lint()
    gm.recompile()
    return gm


# --------------------------------------------------------------------------
# the quantized subgraph
# --------------------------------------------------------------------------
class QuantSubgraph(nn.Module):
    """A DPU subgraph as a brevitas fake-quant ``torch.fx`` graph.

    ``tensors`` maps every quantized tensor's nndct-style name to its kind
    (``input``/``act``/``weight``/``bias``); :meth:`scalers` gives their
    :class:`FixPosScaling` modules.
    """

    def __init__(self, name: str, gm: fx.GraphModule,
                 tensors: 'OrderedDict[str, Tuple[str, str]]',
                 convs: List[dict], fingerprint: str):
        super().__init__()
        self.subgraph_name = name
        self.gm = gm
        self._tensors = tensors  # name -> (kind, scaler module path)
        self.convs = convs
        self.float_fingerprint = fingerprint
        self.fast_finetuned = False
        self.bias_corrected = False

    def forward(self, *args, **kwargs):
        return self.gm(*args, **kwargs)

    # -- quantizer state --------------------------------------------------
    @property
    def tensors(self) -> 'OrderedDict[str, str]':
        return OrderedDict((k, v[0]) for k, v in self._tensors.items())

    def scalers(self) -> 'OrderedDict[str, FixPosScaling]':
        return OrderedDict((k, self.gm.get_submodule(path))
                           for k, (_, path) in self._tensors.items())

    def set_collecting(self, on: bool) -> None:
        for s in self.scalers().values():
            s.collecting = on

    def fix_positions(self) -> 'OrderedDict[str, Optional[int]]':
        return OrderedDict(
            (k, s.get_fix_pos() if s.calibrated else None)
            for k, s in self.scalers().items())

    def uncalibrated(self) -> List[str]:
        return [k for k, p in self.fix_positions().items() if p is None]

    def check_calibrated(self) -> None:
        missing = self.uncalibrated()
        if missing:
            raise QuantStateError(
                f'DPU subgraph {self.subgraph_name!r}: {len(missing)} '
                f'quantized tensor(s) never saw calibration data (e.g. '
                f'{missing[0]!r}); run the calibration forward passes '
                'through the wrapped module before exporting')

    def adjust_shifts(self) -> List[str]:
        """Apply the DPU shifter limits to every conv; returns messages."""
        scalers = self.scalers()
        messages = []
        for conv in self.convs:
            if conv['input'] is None:
                continue
            i = scalers[conv['input']].get_fix_pos()
            w_s = scalers[conv['weight']]
            o_s = scalers[conv['output']]
            b_s = scalers[conv['bias']] if conv['bias'] else None
            w, o = w_s.get_fix_pos(), o_s.get_fix_pos()
            b = b_s.get_fix_pos() if b_s is not None else None
            nw, no, nb = conv_shift_adjust(i, w, o, b)
            for key, s, old, new in ((conv['weight'], w_s, w, nw),
                                     (conv['output'], o_s, o, no),
                                     (conv['bias'], b_s, b, nb)):
                if s is not None and new != old:
                    s.set_fix_pos(new)
                    messages.append(f'{key}: fix position {old} -> {new} '
                                    '(DPU shift limits)')
        return messages

    def quant_info(self, bit_width: int) -> Tuple[dict, dict]:
        """``(param, output)`` entries of nndct's quant_info.json."""
        param, output = OrderedDict(), OrderedDict()
        for key, p in self.fix_positions().items():
            kind = self._tensors[key][0]
            (param if kind in ('weight', 'bias') else output)[key] = [
                bit_width, p]
        return param, output


# --------------------------------------------------------------------------
# builder
# --------------------------------------------------------------------------
def _unique(name: str, used: set) -> str:
    out, k = name, 1
    while out in used:
        out = f'{name}_{k}'
        k += 1
    used.add(out)
    return out


def _first_tensor_arg(node: fx.Node) -> Optional[fx.Node]:
    for a in node.all_input_nodes:
        return a
    return None


def build_quant_subgraph(name: str, module: nn.Module,
                         example_inputs: Sequence[Tensor],
                         bit_width: int = 8,
                         device: torch.device = torch.device('cpu'),
                         ) -> QuantSubgraph:
    """The DPU int8 fake-quant version of ``module`` (see module doc).

    ``module`` itself is left untouched (it is deep-copied).
    """
    if not isinstance(module, nn.Module):
        raise UserInputError(
            f'DPU subgraph {name!r} must be an nn.Module, got '
            f'{type(module).__name__}')
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs, )
    example_inputs = tuple(
        x.to(device) if isinstance(x, Tensor) else x for x in example_inputs)
    fingerprint = module_fingerprint(module)
    model = copy.deepcopy(module).to(device).eval()
    scopes = _scope_names(model)
    gm = trace_subgraph(name, model, example_inputs)
    fold_batchnorm(gm)

    act_q = with_bit_width(DPUActQuant, bit_width)
    in_q = with_bit_width(DPUInputQuant, bit_width)
    w_q = with_bit_width(DPUWeightQuant, bit_width)
    b_q = with_bit_width(DPUBiasQuant, bit_width)
    prefix = f'{name}::{name}'
    used_names: set = set()
    tensors: 'OrderedDict[str, Tuple[str, str]]' = OrderedDict()
    unknown_ops: List[str] = []

    def scope_of(node: fx.Node) -> str:
        if node.op == 'call_module':
            return scopes.get(node.target, node.target)
        stack = node.meta.get('nn_module_stack') or {}
        parent = ''
        if stack:
            parent = scopes.get(list(stack.values())[-1][0], '')
        return f'{parent}/{node.name}' if parent else node.name

    # 1. DPU LeakyReLU slope
    for node in gm.graph.nodes:
        if node.op == 'call_module' and isinstance(
                _module(gm, node), nn.LeakyReLU):
            _module(gm, node).negative_slope = LEAKY_RELU_SLOPE
        elif node.op == 'call_function' and node.target in (
                F.leaky_relu, F.leaky_relu_):
            inp = node.args[0] if node.args else node.kwargs['input']
            node.args = (inp, LEAKY_RELU_SLOPE)
            node.kwargs = {}

    # 2. classify nodes, find the quantization points
    nodes = list(gm.graph.nodes)
    quant_points: List[Tuple[fx.Node, str, str]] = []  # node, kind, name
    fused_acts = set()
    conv_nodes = []
    n_inputs = 0
    for node in nodes:
        if node.op == 'placeholder':
            if _is_float_tensor(node):
                quant_points.append((node, 'input',
                                     _unique(f'{name}::input_{n_inputs}',
                                             used_names)))
            n_inputs += 1
            continue
        if node.op in ('output', 'get_attr') or node in fused_acts:
            continue
        if not _is_float_tensor(node):
            continue
        mod = _module(gm, node)
        is_conv = isinstance(mod, tuple(_QUANT_LAYERS))
        if is_conv:
            conv_nodes.append(node)
        elif _is_act(gm, node):
            if _is_grid_act(gm, node):
                continue  # ReLU of an already quantized tensor
        elif _is_pass(gm, node):
            continue
        elif not (node.target in _ADD_FUNCS or node.target in _CAT_FUNCS
                  or (node.op == 'call_method'
                      and node.target in _ADD_METHODS)
                  or node.target in _RESIZE_FUNCS
                  or isinstance(mod, nn.Upsample)):
            unknown_ops.append(_op_label(gm, node))
        point = node
        users = list(node.users)
        if (not _is_act(gm, node) and len(users) == 1
                and _is_act(gm, users[0]) and _is_float_tensor(users[0])):
            point = users[0]
            fused_acts.add(point)
        quant_points.append(
            (point, 'act', _unique(f'{prefix}/{scope_of(point)}',
                                   used_names)))

    if unknown_ops:
        warnings.warn(
            f'DPU subgraph {name!r}: ops {sorted(set(unknown_ops))} are not '
            'DPU ops the builtin backend knows; their outputs are quantized '
            'like activations, but the DPU compiler may place them on the CPU')

    # 3. conv/linear -> brevitas quant layers
    conv_info, done = {}, {}
    for node in conv_nodes:
        if node.target in done:  # a layer called more than once
            conv_info[node] = dict(done[node.target])
            continue
        mod = _module(gm, node)
        qcls = _QUANT_LAYERS[type(mod)] if type(mod) in _QUANT_LAYERS else \
            next(q for c, q in _QUANT_LAYERS.items() if isinstance(mod, c))
        has_bias = mod.bias is not None
        ModuleToModuleByName(
            node.target, qcls, weight_quant=w_q,
            bias_quant=b_q if has_bias else None, input_quant=None,
            output_quant=None, return_quant_tensor=False).apply(gm)
        qmod = gm.get_submodule(node.target)
        qmod.to(device)
        scope = scopes.get(node.target, node.target)
        w_key = _unique(f'{prefix}/{scope}/weight', used_names)
        tensors[w_key] = ('weight', node.target +
                          '.weight_quant.tensor_quant.scaling_impl')
        b_key = None
        if has_bias:
            b_key = _unique(f'{prefix}/{scope}/bias', used_names)
            tensors[b_key] = ('bias', node.target +
                              '.bias_quant.tensor_quant.scaling_impl')
        conv_info[node] = dict(module=node.target, weight=w_key, bias=b_key)
        done[node.target] = conv_info[node]

    # 4. insert the activation quantizers
    q_of_node: Dict[fx.Node, str] = {}  # quantized node -> tensor name
    q_modules: Dict[str, str] = {}  # QuantIdentity path -> tensor name
    k = 0
    for point, kind, key in quant_points:
        while hasattr(gm, f'dpu_quant_{k}'):
            k += 1
        qname = f'dpu_quant_{k}'
        gm.add_submodule(
            qname,
            qnn.QuantIdentity(act_quant=in_q if kind == 'input' else act_q,
                              return_quant_tensor=False).to(device))
        with gm.graph.inserting_after(point):
            qnode = gm.graph.call_module(qname, args=(point, ))
        point.replace_all_uses_with(
            qnode, delete_user_cb=lambda user, q=qnode: user is not q)
        tensors[key] = (kind, qname + '.act_quant.fused_activation_quant_'
                        'proxy.tensor_quant.scaling_impl')
        q_of_node[point] = key
        q_modules[qname] = key

    # 5. conv connectivity for the DPU shift limits
    def source_key(node: Optional[fx.Node]) -> Optional[str]:
        seen = 0
        while node is not None and seen < 1000:
            seen += 1
            if node.op == 'call_module' and node.target in q_modules:
                return q_modules[node.target]
            if node.op == 'placeholder':
                return None
            if _is_pass(gm, node) or _is_grid_act(gm, node):
                node = _first_tensor_arg(node)
                continue
            return None
        return None

    def output_key(node: fx.Node) -> Optional[str]:
        if node in q_of_node:
            return q_of_node[node]
        users = list(node.users)
        if len(users) == 1 and users[0] in q_of_node:
            return q_of_node[users[0]]
        return None

    convs = []
    for node, info in conv_info.items():
        info = dict(info)
        info['input'] = source_key(node.args[0])
        info['output'] = output_key(node)
        if info['output'] is None:
            info['input'] = None  # not a conv -> quant chain; skip checks
        convs.append(info)

    for key, (kind, path) in tensors.items():
        gm.get_submodule(path).tensor_name = key

    gm.graph.lint()
    gm.recompile()
    # graph order; a conv's weight and bias before its output
    position = {n: i for i, n in enumerate(gm.graph.nodes)}
    rank = {}
    for node, info in conv_info.items():
        rank[info['weight']] = rank[info['bias']] = (position[node], 0)
    for point, key in q_of_node.items():
        rank[key] = (position[point], 1)
    ordered = OrderedDict(
        sorted(tensors.items(), key=lambda kv: rank[kv[0]]))
    return QuantSubgraph(name, gm, ordered, convs, fingerprint).to(device)


_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.\-]*$')


def check_subgraph_name(name) -> str:
    """Subgraph names become key prefixes and folder names."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UserInputError(
            f'DPU subgraph name {name!r} is not valid: use letters, digits, '
            "'_', '-' and '.', not starting with '.' or '-'")
    return name
