"""Per-layer DPU/CPU placement, output shapes and MACs of a detector.

:func:`inspect_detector` runs the detector's own ``test_step`` on example
points with hooks on every layer (leaf module) and reports, per layer, its
op, output shape, MACs and where it runs: on the DPU (inside a subgraph of
:func:`~.partition.partition_detector` and a DPU op), on the CPU with the
reason, or ``unused`` (never called at inference, e.g. losses).  The CPU
glue that is not a module of its own (point decoration, sparse-to-dense,
decode, NMS) gets rows too.  DPU coverage is the DPU share of all MACs.

The DPU op limits below follow the DPUCZDX8G product guide (PG338) for the
ops these detectors use; a layer outside them would be cut out of its DPU
subgraph by the compiler and run on the CPU.
"""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from mmcv.ops import Voxelization
from mmdet3d.models.data_preprocessors.voxelize import \
    VoxelizationByGridShape
from mmdet3d.models.middle_encoders import PointPillarsScatter, SparseEncoder
from mmdet3d.models.voxel_encoders import HardSimpleVFE
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from spconv.pytorch import SparseConvTensor
from spconv.pytorch.conv import SparseConvolution
from torch import Tensor, nn

from .partition import PILLAR_ENCODER, partition_detector

DPU = 'DPU'
CPU = 'CPU'
UNUSED = 'unused'

# The only LeakyReLU slope the DPU implements (26/256).
DPU_LEAKY_RELU_SLOPE = 0.1015625
MAX_CONV_KERNEL = 16
MAX_CONV_STRIDE = 8
MAX_DECONV_STRIDE = 16

REASON_VOXELIZATION = 'voxelization: data-dependent (points to voxels)'
REASON_DECORATION = ('point decoration: data-dependent (per-voxel means, '
                     'voxel coordinates, padding mask)')
REASON_VOXEL_MEAN = 'voxel mean: divides by the data-dependent point count'
REASON_SCATTER = 'scatter: data-dependent indexing'
REASON_SPARSE_CONV = 'sparse 3D conv: no DPU op'
REASON_SPARSE_FEATS = 'runs on sparse 3D conv features: no DPU op'
REASON_DENSIFY = 'sparse to dense: data-dependent indexing'
REASON_DECODE = 'decode: anchor box decoding'
REASON_NMS = 'NMS: data-dependent'
REASON_OUTSIDE = 'not in a DPU subgraph'
REASON_UNUSED = 'not called at inference'


@dataclass
class LayerRecord:
    """One row of the report.

    ``name`` is the module path in the detector (glue steps that are no
    module of their own use the path of the module that runs them);
    ``subgraph`` names the DPU subgraph of DPU rows; ``calls`` counts the
    calls during the example forward (MACs are summed over them).
    """
    name: str
    op: str
    output_shape: str = '-'
    macs: int = 0
    placement: str = UNUSED
    reason: str = REASON_UNUSED
    subgraph: str = ''
    calls: int = 0


@dataclass
class InspectionReport:
    """Per-layer records plus MAC totals; ``to_dict`` is JSON-ready."""
    detector: str
    subgraphs: List[str]
    layers: List[LayerRecord] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def dpu_macs(self) -> int:
        return sum(layer.macs for layer in self.layers
                   if layer.placement == DPU)

    @property
    def dpu_share(self) -> float:
        """DPU MACs / all MACs (0 when nothing has MACs)."""
        total = self.total_macs
        return self.dpu_macs / total if total else 0.0

    @property
    def subgraph_macs(self) -> Dict[str, int]:
        macs = {name: 0 for name in self.subgraphs}
        for layer in self.layers:
            if layer.placement == DPU:
                macs[layer.subgraph] += layer.macs
        return macs

    def cpu_layers(self) -> List[LayerRecord]:
        return [layer for layer in self.layers if layer.placement == CPU]

    def to_dict(self) -> Dict[str, Any]:
        return dict(
            detector=self.detector,
            subgraphs=self.subgraphs,
            total_macs=self.total_macs,
            dpu_macs=self.dpu_macs,
            dpu_share=self.dpu_share,
            subgraph_macs=self.subgraph_macs,
            layers=[asdict(layer) for layer in self.layers])


def dpu_op_issue(module: nn.Module) -> Optional[str]:
    """Why ``module`` cannot run on the DPU, or None if it can."""
    if isinstance(module, nn.Conv2d):
        if module.groups not in (1, module.in_channels):
            return f'grouped conv (groups={module.groups}): no DPU op'
        if max(module.kernel_size) > MAX_CONV_KERNEL:
            return (f'conv kernel {tuple(module.kernel_size)} > '
                    f'{MAX_CONV_KERNEL}')
        if max(module.stride) > MAX_CONV_STRIDE:
            return f'conv stride {tuple(module.stride)} > {MAX_CONV_STRIDE}'
        return None
    if isinstance(module, nn.ConvTranspose2d):
        if module.groups != 1:
            return f'grouped transposed conv (groups={module.groups})'
        if max(module.kernel_size) > MAX_CONV_KERNEL:
            return (f'transposed conv kernel {tuple(module.kernel_size)} > '
                    f'{MAX_CONV_KERNEL}')
        if max(module.stride) > MAX_DECONV_STRIDE:
            return (f'transposed conv stride {tuple(module.stride)} > '
                    f'{MAX_DECONV_STRIDE}')
        return None
    if isinstance(module, nn.LeakyReLU):
        if module.negative_slope != DPU_LEAKY_RELU_SLOPE:
            return (f'LeakyReLU slope {module.negative_slope:g} != '
                    f'{DPU_LEAKY_RELU_SLOPE}')
        return None
    if isinstance(module, nn.Upsample):
        if module.mode != 'nearest':
            return f"Upsample mode {module.mode!r}: DPU has 'nearest' only"
        return None
    if isinstance(module, nn.Conv3d):
        return 'dense 3D conv: no DPU op'
    # Linear runs as a 1x1 conv (pillar encoder); BN folds into the conv.
    if isinstance(module, (nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d,
                           nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d,
                           nn.Identity, nn.Dropout)):
        return None
    return f'{type(module).__name__}: no DPU op known'


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def count_macs(module: nn.Module, inputs: tuple, output: Any) -> int:
    """Multiply-accumulates of one call of ``module`` (0 for non-MAC ops)."""
    if isinstance(module, SparseConvolution):
        cin_cout = module.in_channels * module.out_channels
        data = output.indice_dict.get(module.indice_key) \
            if module.indice_key is not None else None
        pair_num = getattr(data, 'indice_pair_num', None)
        if pair_num is not None:
            # Native algorithm: the exact number of (input, output, offset)
            # pairs the convolution multiplies.
            if not module.subm:
                return int(pair_num.sum()) * cin_cout
            # Submanifold: spconv stores no pairs for the centre offset
            # (every site with itself) and, offsets being symmetric, only
            # the first of each mirrored pair of offsets.
            center = pair_num.numel() // 2
            if int(pair_num[center + 1:].sum()) == 0:
                pairs = 2 * int(pair_num[:center].sum())
            else:
                pairs = int(pair_num.sum()) - int(pair_num[center])
            return (pairs + output.features.shape[0]) * cin_cout
        # Implicit-GEMM algorithms keep masks instead; bound the pairs by
        # every active output site seeing the full kernel.
        return output.features.shape[0] * _prod(module.kernel_size) * \
            cin_cout
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return output.numel() * (module.in_channels // module.groups) * \
            _prod(module.kernel_size)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                           nn.ConvTranspose3d)):
        return inputs[0].numel() * (module.out_channels // module.groups) * \
            _prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _shape(value: Any) -> str:
    if isinstance(value, Tensor):
        return '(' + ', '.join(str(d) for d in value.shape) + ')'
    if isinstance(value, SparseConvTensor):
        return (f'sparse {_shape(value.features)} on '
                f'{list(value.spatial_shape)}')
    if isinstance(value, (tuple, list)):
        return '[' + ', '.join(_shape(v) for v in value) + ']'
    if isinstance(value, dict):
        return '{' + ', '.join(f'{k}: {_shape(v)}'
                               for k, v in value.items()) + '}'
    return '-'


class _Recorder:
    """Collects per-module calls, shapes and MACs in execution order."""

    def __init__(self):
        self.records: Dict[str, LayerRecord] = {}
        self.order: Dict[str, int] = {}
        self.shapes: Dict[str, List[str]] = {}

    def add(self, key: str, record: LayerRecord, shape: str,
            macs: int = 0) -> None:
        if key not in self.records:
            self.records[key] = record
            self.order[key] = len(self.order)
            self.shapes[key] = []
        rec = self.records[key]
        rec.calls += 1
        rec.macs += macs
        if shape not in self.shapes[key]:
            self.shapes[key].append(shape)
        rec.output_shape = ' | '.join(self.shapes[key])

    def hook(self, name: str, module: nn.Module):

        def fn(mod, inputs, output):
            self.add(name, LayerRecord(name, type(mod).__name__),
                     _shape(output), count_macs(mod, inputs, output))

        return module.register_forward_hook(fn)


def _placement(module: nn.Module, in_sparse_encoder: bool,
               subgraph: Optional[str]) -> tuple:
    """(placement, reason) of a called leaf module."""
    if isinstance(module, (Voxelization, VoxelizationByGridShape)):
        return CPU, REASON_VOXELIZATION
    if isinstance(module, HardSimpleVFE):
        return CPU, REASON_VOXEL_MEAN
    if isinstance(module, PointPillarsScatter):
        return CPU, REASON_SCATTER
    if isinstance(module, SparseConvolution):
        return CPU, REASON_SPARSE_CONV
    if in_sparse_encoder:
        return CPU, REASON_SPARSE_FEATS
    if subgraph is None:
        return CPU, REASON_OUTSIDE
    issue = dpu_op_issue(module)
    return (CPU, issue) if issue else (DPU, '')


def _example_data(points: Sequence[Tensor]) -> dict:
    samples = [
        Det3DDataSample(metainfo=dict(box_type_3d=LiDARInstance3DBoxes))
        for _ in points
    ]
    return dict(inputs=dict(points=list(points)), data_samples=samples)


def inspect_detector(detector: nn.Module,
                     example_points: Union[Tensor, Sequence[Tensor]]
                     ) -> InspectionReport:
    """Run ``detector`` on ``example_points`` and report every layer.

    Args:
        detector: a detector :func:`partition_detector` supports.
        example_points: one ``(N, C)`` point cloud or a list of them (a
            batch), in the detector's point format.

    The forward runs in eval mode; every module's mode is restored after.
    """
    partition = partition_detector(detector)
    if isinstance(example_points, Tensor):
        example_points = [example_points]
    names = {module: name for name, module in detector.named_modules()}
    subgraph_of = {}
    for sub_name, source in partition.sources.items():
        for module in source.modules():
            subgraph_of[module] = sub_name
    sparse_modules = set()
    if isinstance(partition.middle_encoder, SparseEncoder):
        sparse_modules = set(partition.middle_encoder.modules())

    recorder = _Recorder()
    handles = []
    leaves = [(name, module) for name, module in detector.named_modules()
              if name and next(module.children(), None) is None]
    for name, module in leaves:
        handles.append(recorder.hook(name, module))
    if partition.decoration is not None:
        layers = partition.sources[PILLAR_ENCODER]  # '<encoder>.pfn_layers'
        encoder_name = names[layers].rsplit('.', 1)[0]
        first_layer = layers[0]

        def decoration_hook(mod, inputs):
            recorder.add(
                f'{encoder_name}:decoration',
                LayerRecord(encoder_name, 'point decoration', placement=CPU,
                            reason=REASON_DECORATION), _shape(inputs[0]))

        handles.append(first_layer.register_forward_pre_hook(decoration_hook))
    if sparse_modules:
        middle_name = names[partition.middle_encoder]

        def densify_hook(mod, inputs, output):
            recorder.add(
                f'{middle_name}:densify',
                LayerRecord(middle_name, 'sparse to dense', placement=CPU,
                            reason=REASON_DENSIFY), _shape(output))

        handles.append(
            partition.middle_encoder.register_forward_hook(densify_hook))

    head = partition.bbox_head
    head_outputs = []
    handles.append(head.register_forward_hook(
        lambda mod, inputs, output: head_outputs.append(output)))

    modes = {module: module.training for module in detector.modules()}
    detector.eval()
    try:
        with torch.no_grad():
            results = detector.test_step(_example_data(example_points))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training

    modules = dict(leaves)
    for key, record in recorder.records.items():
        module = modules.get(key)
        if module is None:
            continue  # glue rows come with their placement
        record.placement, record.reason = _placement(
            module, module in sparse_modules, subgraph_of.get(module))
        if record.placement == DPU:
            record.subgraph = subgraph_of[module]

    head_name = names[head]
    code_size = head.box_code_size
    anchors = sum(
        bbox_pred.shape[0] * bbox_pred.shape[1] // code_size *
        bbox_pred.shape[2] * bbox_pred.shape[3]
        for outs in head_outputs for bbox_pred in outs[1])
    recorder.add(
        f'{head_name}:decode',
        LayerRecord(head_name, 'decode', placement=CPU,
                    reason=REASON_DECODE), f'({anchors}, {code_size})')
    detections = sum(len(r.pred_instances_3d) for r in results)
    recorder.add(
        f'{head_name}:nms',
        LayerRecord(head_name, 'NMS', placement=CPU, reason=REASON_NMS),
        f'({detections}, {code_size})')

    rows = sorted(recorder.records, key=recorder.order.__getitem__)
    layers = [recorder.records[key] for key in rows]
    layers += [
        LayerRecord(name, type(module).__name__) for name, module in leaves
        if name not in recorder.records
    ]
    return InspectionReport(
        type(detector).__name__, partition.subgraph_names, layers)


def _fmt_macs(macs: int) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if macs >= scale:
            return f'{macs / scale:.2f}{unit}'
    return str(macs)


def format_table(report: InspectionReport) -> str:
    """Render the report as a fixed-width text table plus a summary."""
    header = ('layer', 'op', 'output shape', 'MACs', 'where', 'why')
    rows = []
    for layer in report.layers:
        where = (f'{DPU}:{layer.subgraph}'
                 if layer.placement == DPU else layer.placement)
        rows.append((layer.name, layer.op, layer.output_shape,
                     _fmt_macs(layer.macs) if layer.calls else '-', where,
                     layer.reason))
    widths = [
        max(len(str(row[i])) for row in rows + [header])
        for i in range(len(header))
    ]
    lines = ['  '.join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
             for row in [header] + rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    lines.append('')
    lines.append(f'{report.detector}: {_fmt_macs(report.total_macs)} MACs, '
                 f'DPU {_fmt_macs(report.dpu_macs)} '
                 f'({100 * report.dpu_share:.2f}%)')
    for name, macs in report.subgraph_macs.items():
        lines.append(f'  DPU subgraph {name}: {_fmt_macs(macs)} MACs')
    return '\n'.join(lines)
