"""Split a built mmdet3d voxel detector into DPU subgraphs and CPU glue.

The Vitis AI quantizer (``pytorch_nndct``) and the DPU compiler take a module
whose forward maps a tuple of tensors to a tuple of tensors with fixed
shapes.  An mmdet3d voxel detector is not such a module: it takes dicts and
data samples, voxelizes, scatters or runs sparse 3D convolutions, decodes
anchors and runs NMS.  The Vitis AI model zoo split PointPillars by hand;
:func:`partition_detector` derives the same split from any supported
detector without touching mmdet3d or the model code:

``pillar_encoder`` (DPU, PillarFeatureNet / HardVFE only)
    The point-wise layers of the voxel encoder on a
    ``(1, C_in, N_voxels, N_points)`` tensor: every ``Linear`` becomes a 1x1
    ``Conv2d`` with the same weights, every ``BatchNorm1d`` a ``BatchNorm2d``
    with the same statistics (kept separate so the quantizer folds it), the
    max over the points of a voxel a ``MaxPool2d`` of kernel
    ``(1, N_points)`` (the DPU's own pooling op; ``torch.max`` would need a
    reduction op that not every DPU has) and HardVFE/PFN ``cat_max`` a
    ``repeat`` + ``cat``.  Output: ``(1, C_out, N_voxels, 1)``.  The name is
    the zoo's even for HardVFE on non-pillar voxels.
``bev`` (DPU)
    Backbone + neck + head convolutions on the ``(1, C, H, W)`` bird's-eye
    view pseudo-image, returning the head maps flattened into one tuple
    ``(cls_score_0, bbox_pred_0[, dir_cls_pred_0], cls_score_1, ...)``.  It
    calls the detector's own layers, so it shares their weights (synchronised
    batch norms run as plain ``BatchNorm2d`` on the same tensors, see
    :func:`plain_batchnorm`).
CPU glue (:class:`DetectorPartition`)
    Hard voxelization through the detector's data preprocessor, the point
    decoration of the voxel encoder (:class:`PointDecoration`, or the
    detector's own parameter-free ``HardSimpleVFE`` / ``VitisRadiusVFE``),
    the detector's own middle
    encoder (``PointPillarsScatter`` or spconv ``SparseEncoder``) and
    decode + NMS through the head's own ``predict_by_feat``.

The pillar encoder copies the voxel encoder's weights, so partition a
detector whose weights are final (load the checkpoint first).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.necks import FPN
from mmdet3d.models.backbones import SECOND
from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
from mmdet3d.models.dense_heads import Anchor3DHead
from mmdet3d.models.detectors import MVXFasterRCNN, VoxelNet
from mmdet3d.models.middle_encoders import PointPillarsScatter, SparseEncoder
from mmdet3d.models.necks import SECONDFPN
from mmdet3d.models.voxel_encoders import (HardSimpleVFE, HardVFE,
                                           PillarFeatureNet)
from mmdet3d.models.voxel_encoders.utils import (PFNLayer, VFELayer,
                                                 get_paddings_indicator)
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UserInputError
from ..models import VitisAnchor3DHead, VitisRadiusVFE

PILLAR_ENCODER = 'pillar_encoder'
BEV = 'bev'

# Exact classes, not isinstance: subclasses such as DynamicVoxelNet,
# DynamicPillarFeatureNet or PartA2RPNHead change the forward this module
# mirrors, so they must be rejected rather than silently mis-partitioned.
SUPPORTED = {
    'detector': (VoxelNet, MVXFasterRCNN),
    'voxel encoder': (PillarFeatureNet, HardVFE, HardSimpleVFE,
                      VitisRadiusVFE),
    'middle encoder': (PointPillarsScatter, SparseEncoder),
    'backbone': (SECOND, ),
    'neck': (SECONDFPN, FPN),
    'bbox head': (Anchor3DHead, VitisAnchor3DHead),
}
# parameter-free voxel encoders: CPU glue, run as they are
CPU_VOXEL_ENCODERS = (HardSimpleVFE, VitisRadiusVFE)


class UnsupportedModelError(UserInputError):
    """The detector has a component the DPU partition cannot handle."""


def _names(classes: Sequence[type]) -> str:
    return ', '.join(c.__name__ for c in classes)


def _check_type(role: str, attr: str, module: Optional[nn.Module]) -> None:
    classes = SUPPORTED[role]
    if module is None or type(module) not in classes:
        found = 'none' if module is None else type(module).__name__
        raise UnsupportedModelError(
            f'{role} {found} ({attr}) is not supported by the DPU partition; '
            f'supported {role}s: {_names(classes)}')


class PointDecoration(nn.Module):
    """CPU glue: the point decoration of PillarFeatureNet / HardVFE.

    Reproduces the encoder's own feature decoration (cluster-centre offsets,
    voxel-centre offsets, distance, including PillarFeatureNet's ``legacy``
    quirk) and the zeroing of padded points, then lays the result out as the
    ``(1, C, N_voxels, N_points)`` input of the ``pillar_encoder`` subgraph.
    It is data-dependent (per-voxel point counts and coordinates), so it
    stays on the CPU.  Unlike the legacy encoder it never writes into its
    input.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.with_cluster_center = encoder._with_cluster_center
        self.with_voxel_center = encoder._with_voxel_center
        self.with_distance = encoder._with_distance
        # HardVFE has no legacy mode; PillarFeatureNet defaults to it.
        self.legacy = getattr(encoder, 'legacy', False)
        self.vx, self.vy, self.vz = encoder.vx, encoder.vy, encoder.vz
        self.x_offset = encoder.x_offset
        self.y_offset = encoder.y_offset
        self.z_offset = encoder.z_offset
        self.out_channels = encoder.in_channels
        # Per-channel power-of-two input normalisation (see
        # DetectorPartition.set_pillar_input_scale); ones = none.
        self.register_buffer('input_scale', torch.ones(self.out_channels))

    def forward(self, voxels: Tensor, num_points: Tensor,
                coors: Tensor) -> Tensor:
        """(N, P, C_point) voxels -> (1, C_in, N, P) decorated features."""
        features = voxels
        dtype = features.dtype
        decorations = []
        if self.with_cluster_center:
            points_mean = features[:, :, :3].sum(
                dim=1, keepdim=True) / num_points.type_as(features).view(
                    -1, 1, 1)
            decorations.append(features[:, :, :3] - points_mean)
        if self.with_voxel_center:
            # Same expressions as the encoders, so the values are bitwise
            # identical.
            f_center = torch.stack([
                features[:, :, 0] -
                (coors[:, 3].to(dtype).unsqueeze(1) * self.vx + self.x_offset),
                features[:, :, 1] -
                (coors[:, 2].to(dtype).unsqueeze(1) * self.vy + self.y_offset),
                features[:, :, 2] -
                (coors[:, 1].to(dtype).unsqueeze(1) * self.vz + self.z_offset),
            ], dim=-1)
            if self.legacy:
                # Legacy PillarFeatureNet computes the centre offsets in place
                # on a view of the raw points, so its raw x, y, z (and the
                # distance below) become the centre offsets.
                features = torch.cat([f_center, features[:, :, 3:]], dim=-1)
            decorations.append(f_center)
        if self.with_distance:
            decorations.append(
                torch.norm(features[:, :, :3], 2, 2, keepdim=True))
        features = torch.cat([features] + decorations, dim=-1)
        # Decorations ignore padding; the encoders zero padded points, and so
        # must we (they still pass through linear + BN + ReLU + max).
        mask = get_paddings_indicator(num_points, features.shape[1], axis=0)
        features = features * mask.unsqueeze(-1).type_as(features)
        features = features * self.input_scale.to(dtype)
        return features.permute(2, 0, 1).unsqueeze(0).contiguous()


class PointLayer(nn.Module):
    """One PFNLayer / VFELayer as 1x1 conv + BN2d + ReLU + max over points.

    Input ``(1, C_in, N, P)``.  Output ``(1, C_out, N, 1)`` for the last
    layer, else the point features concatenated with their voxel maximum
    repeated over the points, ``(1, 2 * C_out, N, P)``.
    """

    def __init__(self, linear: nn.Linear, norm: nn.BatchNorm1d,
                 num_points: int, cat_max: bool):
        super().__init__()
        self.conv = nn.Conv2d(
            linear.in_features, linear.out_features, 1,
            bias=linear.bias is not None)
        self.conv.weight.data.copy_(
            linear.weight.data.view(*linear.weight.shape, 1, 1))
        if linear.bias is not None:
            self.conv.bias.data.copy_(linear.bias.data)
        self.norm = nn.BatchNorm2d(
            norm.num_features, eps=norm.eps, momentum=norm.momentum,
            affine=norm.affine,
            track_running_stats=norm.track_running_stats)
        self.norm.load_state_dict(norm.state_dict())
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=(1, num_points))
        self.num_points = num_points
        self.cat_max = cat_max

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.norm(self.conv(x)))
        x_max = self.pool(x)
        if not self.cat_max:
            return x_max
        return torch.cat([x, x_max.repeat(1, 1, 1, self.num_points)], dim=1)


class PillarEncoderSubgraph(nn.Sequential):
    """DPU subgraph 0: ``(1, C_in, N, P)`` -> ``(1, C_out, N, 1)``.

    A sequence of :class:`PointLayer`; a class of its own so that reports
    and quantizer logs name it.
    """


def _point_layers(encoder: nn.Module, num_points: int) -> List[PointLayer]:
    """PointLayers equivalent to the encoder's PFN/VFE layers, in order."""
    layers = []
    if isinstance(encoder, PillarFeatureNet):
        for pfn in encoder.pfn_layers:
            if type(pfn) is not PFNLayer or pfn.mode != 'max':
                raise UnsupportedModelError(
                    f"PillarFeatureNet layer {type(pfn).__name__} with mode "
                    f"{getattr(pfn, 'mode', '?')!r} is not supported by the "
                    "DPU partition; supported: PFNLayer with mode 'max' "
                    "('avg' divides by the data-dependent point count)")
            layers.append((pfn.linear, pfn.norm, not pfn.last_vfe))
    else:
        if encoder.fusion_layer is not None:
            raise UnsupportedModelError(
                'HardVFE with a fusion_layer (image fusion) is not supported '
                'by the DPU partition; supported: HardVFE without fusion')
        for vfe in encoder.vfe_layers:
            if type(vfe) is not VFELayer or not vfe.max_out:
                raise UnsupportedModelError(
                    f'HardVFE layer {type(vfe).__name__} without max_out is '
                    'not supported by the DPU partition')
            layers.append((vfe.linear, vfe.norm, vfe.cat_max))
    if layers[-1][2]:
        raise UnsupportedModelError(
            'the last voxel encoder layer concatenates point features '
            '(cat_max); the DPU partition needs one feature per voxel')
    for linear, norm, _ in layers:
        if not isinstance(norm, nn.BatchNorm1d):
            raise UnsupportedModelError(
                f'voxel encoder norm {type(norm).__name__} is not supported '
                'by the DPU partition; supported: BatchNorm1d (and its '
                'synchronised variants)')
    return [
        PointLayer(linear, norm, num_points, cat_max)
        for linear, norm, cat_max in layers
    ]


def plain_batchnorm(module: Optional[nn.Module]) -> Optional[nn.Module]:
    """``module`` with every batch norm a plain ``nn.BatchNorm2d``.

    mmdet3d's ``NaiveSyncBatchNorm2d`` (the nuScenes configs' BN) asserts on
    its input dtype in ``forward``, which ``torch.fx`` cannot trace; in eval
    mode it computes exactly what ``BatchNorm2d`` does.  Returns ``module``
    itself when it has no other batch norm, else a copy of its containers in
    which each such norm is a ``BatchNorm2d`` holding the *same* parameter
    and running-statistic tensors, and every other layer is the detector's
    own module: weights stay shared and the detector is left untouched.
    """
    if module is None:
        return None
    memo = {}
    replaced = False
    for m in module.modules():
        if isinstance(m, _BatchNorm) and type(m) is not nn.BatchNorm2d:
            bn = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine,
                                m.track_running_stats)
            for name in ('weight', 'bias', 'running_mean', 'running_var',
                         'num_batches_tracked'):
                setattr(bn, name, getattr(m, name))
            bn.train(m.training)
            memo[id(m)] = bn
            replaced = True
        elif next(m.children(), None) is None:
            memo[id(m)] = m  # shared leaf layer
    if not replaced:
        return module
    # Containers may hold tensors of their own: share those too.
    for tensor in list(module.parameters()) + list(module.buffers()):
        memo[id(tensor)] = tensor
    return copy.deepcopy(module, memo)


class BEVSubgraph(nn.Module):
    """DPU subgraph 1: backbone + neck + head convs on the BEV image.

    ``forward(bev)`` with ``bev`` ``(1, C, H, W)`` returns, per head level,
    ``cls_score, bbox_pred`` and (with a direction classifier)
    ``dir_cls_pred``, flattened into one tuple.  It runs the detector's own
    layers (shared weights), through :func:`plain_batchnorm` so that
    ``torch.fx`` traces it as well as ``torch.jit.trace``.
    """

    def __init__(self, backbone: nn.Module, neck: Optional[nn.Module],
                 head: Anchor3DHead, num_levels: int):
        super().__init__()
        self.backbone = plain_batchnorm(backbone)
        self.neck = plain_batchnorm(neck)
        self.head = plain_batchnorm(head)
        self.num_levels = num_levels
        per_level = ['cls_score', 'bbox_pred']
        if head.use_direction_classifier:
            per_level.append('dir_cls_pred')
        self.output_names = [
            f'{name}_{level}' for level in range(num_levels)
            for name in per_level
        ]

    def forward(self, bev: Tensor) -> Tuple[Tensor, ...]:
        feats = self.backbone(bev)
        if self.neck is not None:
            feats = self.neck(feats)
        outs = []
        for feat in feats:
            # forward_single, not forward: multi_apply returns lists and a
            # None direction map, neither of which a tracer accepts.
            cls_score, bbox_pred, dir_cls_pred = self.head.forward_single(
                feat)
            outs += [cls_score, bbox_pred]
            if dir_cls_pred is not None:
                outs.append(dir_cls_pred)
        return tuple(outs)


class DetectorPartition(nn.Module):
    """The DPU subgraphs of a detector and the CPU glue between them.

    Attributes:
        data_preprocessor: the detector's ``Det3DDataPreprocessor``
            (hard voxelization).
        decoration: :class:`PointDecoration` for PillarFeatureNet / HardVFE,
            else None.
        voxel_mean: the detector's parameter-free voxel encoder
            (``HardSimpleVFE`` / ``VitisRadiusVFE``, CPU), else None.
        middle_encoder: the detector's ``PointPillarsScatter`` or
            ``SparseEncoder`` (CPU).
        bbox_head: the detector's ``Anchor3DHead`` (decode + NMS on the CPU;
            its convolutions also run inside ``subgraphs['bev']``).
        subgraphs: ``nn.ModuleDict`` of the DPU subgraphs in execution order,
            ``'pillar_encoder'`` (if any) then ``'bev'``.
        sources: for each subgraph, the detector module(s) it implements.
        voxel_padding: if set, the pillar encoder input is zero-padded to
            this many voxels (the fixed DPU input shape; the output is cut
            back, which is exact because voxels are independent).
    """

    def __init__(self, data_preprocessor: Det3DDataPreprocessor,
                 decoration: Optional[PointDecoration],
                 voxel_mean: Optional[nn.Module], middle_encoder: nn.Module,
                 subgraphs: Dict[str, nn.Module], bbox_head: Anchor3DHead,
                 sources: Dict[str, nn.Module],
                 voxel_padding: Optional[int] = None):
        super().__init__()
        self.data_preprocessor = data_preprocessor
        self.decoration = decoration
        self.voxel_mean = voxel_mean
        self.middle_encoder = middle_encoder
        self.subgraphs = nn.ModuleDict(subgraphs)
        self.bbox_head = bbox_head
        # A plain dict: these modules are registered elsewhere already.
        self.sources = dict(sources)
        self.voxel_padding = voxel_padding

    @property
    def subgraph_names(self) -> List[str]:
        return list(self.subgraphs.keys())

    @property
    def num_points(self) -> int:
        """Points per voxel (the ``N_points`` axis of the pillar encoder)."""
        return self.data_preprocessor.voxel_layer.max_num_points

    @property
    def max_voxels(self) -> int:
        """Test-time voxel cap of the voxelization."""
        max_voxels = self.data_preprocessor.voxel_layer.max_voxels
        return max_voxels[1] if isinstance(max_voxels,
                                           (tuple, list)) else max_voxels

    def bev_shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of the ``bev`` subgraph input.

        Found by running the middle encoder on one zero voxel, which works
        the same for the scatter and for the sparse encoder's strided
        convolutions.
        """
        ref = next(self.bbox_head.parameters())
        feats = ref.new_zeros(1, self.middle_encoder.in_channels)
        coors = torch.zeros(1, 4, dtype=torch.int32, device=ref.device)
        with torch.no_grad():
            bev = self.middle_encoder(feats, coors, 1)
        return tuple(bev.shape[1:])

    def example_inputs(self, name: str,
                       num_voxels: Optional[int] = None) -> Tuple[Tensor]:
        """A correctly shaped input tuple of subgraph ``name`` for tracing.

        ``num_voxels`` sets the pillar encoder's voxel axis; it defaults to
        ``voxel_padding`` or else the test-time ``max_voxels`` (the fixed DPU
        shape).  Values are random: calibrate with real data.
        """
        ref = next(self.bbox_head.parameters())
        if name == PILLAR_ENCODER and name in self.subgraphs:
            n = num_voxels or self.voxel_padding or self.max_voxels
            shape = (1, self.decoration.out_channels, n, self.num_points)
        elif name == BEV:
            shape = (1, ) + self.bev_shape()
        else:
            raise KeyError(f'no DPU subgraph {name!r}; subgraphs: '
                           f'{self.subgraph_names}')
        return (torch.randn(shape, dtype=ref.dtype, device=ref.device), )

    def set_pillar_input_scale(self, max_abs: Tensor) -> Tensor:
        """Normalise each pillar-encoder input channel to about [-1, 1].

        The decorated point features mix metres (+-50), intensities (0-255)
        and offsets of a few centimetres; one int8 scale for the whole
        ``pillar_encoder`` input (the DPU's per-tensor quantization) would
        round the small ones away. The CPU glue multiplies channel ``c`` by
        ``s_c = 2**-ceil(log2(max_abs[c]))`` and the first 1x1 conv divides
        its input weights by ``s_c``: powers of two, so the float result is
        bit-identical. Returns the scales (kept in ``decoration.input_scale``
        for deployment).
        """
        if self.decoration is None:
            raise ValueError('this detector has no pillar encoder subgraph')
        max_abs = torch.as_tensor(max_abs, dtype=torch.float32)
        exponent = torch.ceil(torch.log2(max_abs.clamp(min=2.0**-20)))
        scale = torch.where(max_abs > 0, torch.pow(2.0, -exponent),
                            torch.ones_like(max_abs))
        first = self.subgraphs[PILLAR_ENCODER][0].conv
        old = self.decoration.input_scale
        first.weight.data *= (old / scale).view(1, -1, 1, 1).to(
            first.weight.dtype)
        self.decoration.input_scale.copy_(scale)
        return scale.clone()

    def voxel_features(self, voxels: Tensor, num_points: Tensor,
                       coors: Tensor) -> Tensor:
        """Per-voxel features ``(N, C)`` of one sample (CPU glue + DPU 0)."""
        if self.decoration is None:
            return self.voxel_mean(voxels, num_points, coors)
        x = self.decoration(voxels, num_points, coors)
        n = x.shape[2]
        if self.voxel_padding is not None:
            if n > self.voxel_padding:
                raise ValueError(
                    f'{n} voxels exceed voxel_padding={self.voxel_padding}')
            x = nn.functional.pad(x, (0, 0, 0, self.voxel_padding - n))
        out = self.subgraphs[PILLAR_ENCODER](x)
        return out[0, :, :n, 0].t()

    def bev_input(self, voxels: Tensor, num_points: Tensor,
                  coors: Tensor) -> Tensor:
        """The ``(1, C, H, W)`` input of the ``bev`` subgraph for one sample.

        ``coors`` are ``(batch, z, y, x)`` voxel coordinates of this sample
        only; the batch column is ignored.
        """
        feats = self.voxel_features(voxels, num_points, coors)
        coors = coors.clone()
        coors[:, 0] = 0
        return self.middle_encoder(feats, coors, 1)

    def forward(self, voxels: Tensor, num_points: Tensor,
                coors: Tensor) -> Tuple[Tensor, ...]:
        """One sample's voxels -> the flat head output tuple of ``bev``."""
        return self.subgraphs[BEV](self.bev_input(voxels, num_points, coors))

    def split_head_outputs(
        self, outs: Sequence[Tensor]
    ) -> Tuple[List[Tensor], List[Tensor], List[Optional[Tensor]]]:
        """Flat ``bev`` outputs -> ``(cls_scores, bbox_preds, dir_cls_preds)``.

        The per-level lists ``Anchor3DHead.predict_by_feat`` takes; the
        direction list holds None per level without a direction classifier.
        """
        per_level = 3 if self.bbox_head.use_direction_classifier else 2
        levels = [
            outs[i:i + per_level] for i in range(0, len(outs), per_level)
        ]
        cls_scores = [level[0] for level in levels]
        bbox_preds = [level[1] for level in levels]
        dir_cls_preds = [
            level[2] if per_level == 3 else None for level in levels
        ]
        return cls_scores, bbox_preds, dir_cls_preds


def _components(detector: nn.Module) -> Dict[str, Tuple[str, nn.Module]]:
    """role -> (attribute name, module) for VoxelNet or MVXFasterRCNN."""
    if type(detector) is MVXFasterRCNN:
        for attr in ('img_backbone', 'img_neck', 'img_rpn_head',
                     'img_roi_head', 'pts_fusion_layer'):
            if getattr(detector, attr, None) is not None:
                raise UnsupportedModelError(
                    f'MVXFasterRCNN with an image branch ({attr}) is not '
                    'supported by the DPU partition; supported: the point '
                    'cloud branch alone')
        prefix = 'pts_'
    else:
        prefix = ''
    roles = {
        'voxel encoder': 'voxel_encoder',
        'middle encoder': 'middle_encoder',
        'backbone': 'backbone',
        'neck': 'neck',
        'bbox head': 'bbox_head',
    }
    return {
        role: (prefix + attr, getattr(detector, prefix + attr, None))
        for role, attr in roles.items()
    }


def partition_detector(detector: nn.Module,
                       voxel_padding: Optional[int] = None
                       ) -> DetectorPartition:
    """Split a built mmdet3d detector into DPU subgraphs and CPU glue.

    Args:
        detector: a built ``VoxelNet`` or ``MVXFasterRCNN`` (point branch
            only) with weights loaded.
        voxel_padding: zero-pad the pillar encoder input to this many voxels
            (see :class:`DetectorPartition`); None runs the actual count.

    Raises:
        UnsupportedModelError: naming the first unsupported component and
            what is supported instead.
    """
    if type(detector) not in SUPPORTED['detector']:
        raise UnsupportedModelError(
            f'detector {type(detector).__name__} is not supported by the DPU '
            f"partition; supported detectors: "
            f"{_names(SUPPORTED['detector'])}")
    parts = _components(detector)
    for role, (attr, module) in parts.items():
        if role == 'neck' and module is None:
            continue  # the head may take the backbone levels directly
        _check_type(role, attr, module)
    preprocessor = detector.data_preprocessor
    if (not isinstance(preprocessor, Det3DDataPreprocessor)
            or not preprocessor.voxel or preprocessor.voxel_type != 'hard'):
        raise UnsupportedModelError(
            f'data preprocessor {type(preprocessor).__name__} without hard '
            'voxelization is not supported by the DPU partition; supported: '
            "Det3DDataPreprocessor(voxel=True, voxel_type='hard')")

    encoder = parts['voxel encoder'][1]
    backbone = parts['backbone'][1]
    neck = parts['neck'][1]
    head = parts['bbox head'][1]
    subgraphs, sources = {}, {}
    decoration = voxel_mean = None
    if type(encoder) in CPU_VOXEL_ENCODERS:
        voxel_mean = encoder
    else:
        decoration = PointDecoration(encoder)
        layers = _point_layers(encoder,
                               preprocessor.voxel_layer.max_num_points)
        # The converted copies take the encoder's train/eval mode.
        subgraphs[PILLAR_ENCODER] = PillarEncoderSubgraph(*layers).train(
            encoder.training)
        sources[PILLAR_ENCODER] = (
            encoder.pfn_layers
            if isinstance(encoder, PillarFeatureNet) else encoder.vfe_layers)
    if neck is None:
        num_levels = len(backbone.blocks)
    elif isinstance(neck, FPN):
        num_levels = neck.num_outs
    else:
        num_levels = 1  # SECONDFPN concatenates its levels
    subgraphs[BEV] = BEVSubgraph(backbone, neck, head, num_levels)
    sources[BEV] = nn.ModuleList(
        m for m in (backbone, neck, head) if m is not None)
    partition = DetectorPartition(
        preprocessor, decoration, voxel_mean, parts['middle encoder'][1],
        subgraphs, head, sources, voxel_padding)
    # Only the new containers' flags: .train() would recurse into the
    # detector's own modules and override their individual modes.
    partition.training = subgraphs[BEV].training = detector.training
    return partition
