"""Operations, parameters and DPU coverage of the DPU subgraphs.

Counted, not typed: every DPU subgraph of :func:`~.partition.
partition_detector` is traced with ``torch.fx`` (the builtin quantizer's
tracer, so the layers are the ones it quantizes) and its shapes propagated
at the config's fixed DPU input:

* ``pillar_encoder``: ``(1, C, max_voxels, max_num_points)``, the test-time
  voxel cap times the points per voxel (what the DPU always runs, however
  few pillars a frame has);
* ``bev``: ``(1, C, H, W)``, the scatter grid.

Shapes are propagated on the ``meta`` device (no arithmetic is done), so a
40000 x 64 zoo model counts in a second.  Every ``Conv``/``ConvTranspose``/
``Linear`` node contributes its multiply-accumulates (MACs, the inspector's
:func:`~.inspector.count_macs`); batch norms fold into the convs and
activations, pooling, adds and concatenations are not counted.

Convention (the Vitis AI model zoo's): **GOPs = 2 x MACs / 1e9** (one
multiply and one add per MAC; the zoo lists ResNet-50 at 224 x 224, 4.1 G
MACs, as 8.2 G).  Two counts are kept per layer:

* ``macs``: the arithmetic of the layer (a transposed conv does
  ``input elements x C_out x k*k`` MACs);
* ``macs_zoo``: a transposed conv counted as the dense conv over its
  zero-inserted (stride-upsampled) input that a DPU runs, ``output
  elements x C_in x k*k``; the same as ``macs`` for every other layer.
  The zoo does not document how it counts; this count is inferred from its
  figure: the zoo mirror (``pointpillars_zoo-40000x64``) is 61.5 G
  arithmetic and 104.7 G this way vs the zoo's 108 G (3 % under, not
  explained layer by layer), the 43.2 G between the two being the neck's
  stride-2 and stride-4 transposed convs (4x and 16x their arithmetic).

DPU coverage is the share of MACs in layers with a DPU op
(:func:`~.inspector.dpu_op_issue`); the CPU glue (voxelization, point
decoration, scatter, anchor decode, NMS) has no MACs.
"""
import copy
from collections import OrderedDict
from typing import Dict, Optional

import torch
from torch import fx, nn

from .inspector import count_macs, dpu_op_issue
from .partition import BEV, PILLAR_ENCODER, partition_detector

__all__ = ['OPS_CONVENTION', 'count_module_ops', 'count_detector_ops',
           'gops', 'format_ops_table']

OPS_CONVENTION = ('GOPs = 2 x MACs / 1e9 of every Conv / ConvTranspose / '
                  'Linear in the traced DPU subgraphs at the fixed DPU input '
                  'shape (the Vitis AI model zoo convention)')

_MAC_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
              nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def gops(macs: int) -> float:
    """``2 * macs / 1e9``."""
    return 2.0 * float(macs) / 1e9


def _numel(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _shape(meta) -> Optional[tuple]:
    tm = meta.get('tensor_meta') if meta else None
    shape = getattr(tm, 'shape', None)
    return tuple(int(d) for d in shape) if shape is not None else None


def count_module_ops(module: nn.Module, example_inputs,
                     name: str = 'subgraph') -> Dict:
    """MACs of every MAC layer of ``module`` traced at ``example_inputs``.

    Returns ``dict(macs, gops, params, dpu_macs, cpu_macs, input_shapes,
    layers=[dict(name, op, input_shape, output_shape, macs, gops, dpu,
    reason)])`` in graph order; a layer called twice has two rows.
    ``module`` is deep-copied to the meta device; it is left untouched.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    from .backends.graph import _DPUTracer
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs, )
    model = copy.deepcopy(module).eval().to('meta')
    graph = _DPUTracer().trace(model)
    gm = fx.GraphModule(model, graph, type(model).__name__)
    inputs = tuple(torch.empty(tuple(x.shape), dtype=x.dtype, device='meta')
                   for x in example_inputs)
    with torch.no_grad():
        ShapeProp(gm).propagate(*inputs)
    layers = []
    for node in gm.graph.nodes:
        if node.op != 'call_module':
            if node.op == 'call_function' and getattr(
                    node.target, '__name__', '') in (
                        'conv1d', 'conv2d', 'conv3d', 'linear',
                        'conv_transpose2d'):
                raise ValueError(
                    f'{name}: functional {node.target.__name__} at '
                    f'{node.name} is not counted; use an nn module')
            continue
        mod = gm.get_submodule(node.target)
        if not isinstance(mod, _MAC_TYPES):
            continue
        in_shape = _shape(node.args[0].meta) if node.args else None
        out_shape = _shape(node.meta)
        macs = count_macs(
            mod, (torch.empty(in_shape, device='meta'), ),
            torch.empty(out_shape, device='meta'))
        macs_zoo = macs
        if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                            nn.ConvTranspose3d)):
            macs_zoo = (_numel(out_shape) * (mod.in_channels // mod.groups)
                        * _numel(mod.kernel_size))
        issue = dpu_op_issue(mod)
        layers.append(OrderedDict(
            name=str(node.target), op=type(mod).__name__,
            input_shape=list(in_shape), output_shape=list(out_shape),
            macs=int(macs), gops=gops(macs), macs_zoo=int(macs_zoo),
            gops_zoo=gops(macs_zoo), dpu=issue is None,
            reason=issue or ''))
    macs = sum(r['macs'] for r in layers)
    macs_zoo = sum(r['macs_zoo'] for r in layers)
    dpu = sum(r['macs'] for r in layers if r['dpu'])
    return OrderedDict(
        macs=int(macs), gops=gops(macs), macs_zoo=int(macs_zoo),
        gops_zoo=gops(macs_zoo),
        params=int(sum(p.numel() for p in module.parameters())),
        dpu_macs=int(dpu), cpu_macs=int(macs - dpu),
        input_shapes=[list(x.shape) for x in example_inputs],
        layers=layers)


def count_detector_ops(detector: nn.Module,
                       num_voxels: Optional[int] = None) -> Dict:
    """Ops of every DPU subgraph of ``detector`` at its fixed DPU input.

    ``num_voxels`` overrides the pillar encoder's voxel axis (default: the
    test-time ``max_voxels``).  Returns ``dict(convention, subgraphs={name:
    count_module_ops(...)}, total_macs, total_gops, dpu_macs, dpu_gops,
    dpu_coverage, total_macs_zoo, total_gops_zoo, params,
    input=dict(max_voxels, max_points, pillar_channels, bev_channels,
    bev_grid))``.
    """
    part = partition_detector(detector)
    subgraphs = OrderedDict()
    for name in part.subgraph_names:
        ex = part.example_inputs(
            name, num_voxels if name == PILLAR_ENCODER else None)
        subgraphs[name] = count_module_ops(part.subgraphs[name], ex, name)
    total = sum(s['macs'] for s in subgraphs.values())
    total_zoo = sum(s['macs_zoo'] for s in subgraphs.values())
    dpu = sum(s['dpu_macs'] for s in subgraphs.values())
    bev_c, bev_h, bev_w = (int(v) for v in subgraphs[BEV]['input_shapes'][0]
                           [1:])
    pe = subgraphs.get(PILLAR_ENCODER)
    return OrderedDict(
        convention=OPS_CONVENTION,
        input=OrderedDict(
            max_voxels=int(pe['input_shapes'][0][2]) if pe else None,
            max_points=int(part.num_points),
            pillar_channels=int(pe['input_shapes'][0][1]) if pe else None,
            bev_channels=bev_c, bev_grid=[bev_h, bev_w]),
        subgraphs=subgraphs,
        total_macs=int(total), total_gops=gops(total),
        total_macs_zoo=int(total_zoo), total_gops_zoo=gops(total_zoo),
        dpu_macs=int(dpu), dpu_gops=gops(dpu),
        dpu_coverage=dpu / total if total else 0.0,
        params=int(sum(p.numel() for p in detector.parameters())))


def format_ops_table(ops: Dict) -> str:
    """Per-layer MACs / GOPs of each subgraph, then the totals."""
    lines = []
    for name, sub in ops['subgraphs'].items():
        lines.append(f'[{name}] input {sub["input_shapes"]}: '
                     f'{sub["gops"]:.3f} GOPs ({sub["macs"]:,} MACs); '
                     f'{sub["gops_zoo"]:.3f} GOPs zoo count')
        width = max([len(r['name']) for r in sub['layers']] + [5])
        for r in sub['layers']:
            where = 'DPU' if r['dpu'] else f'CPU ({r["reason"]})'
            lines.append(
                f'  {r["name"]:<{width}} {r["op"]:<16} '
                f'{str(tuple(r["output_shape"])):<24} '
                f'{r["gops"]:9.3f} G {r["gops_zoo"]:9.3f} G(zoo)  {where}')
    lines.append(f'total {ops["total_gops"]:.3f} GOPs, DPU '
                 f'{ops["dpu_gops"]:.3f} GOPs '
                 f'({100 * ops["dpu_coverage"]:.2f} % of MACs); '
                 f'{ops["total_gops_zoo"]:.3f} GOPs zoo count (transposed '
                 'convs on their zero-inserted input); '
                 f'{ops["params"]:,} parameters')
    lines.append(f'({ops["convention"]})')
    return '\n'.join(lines)
