"""A small Semantic-FPN camera segmenter for PointPainting.

:class:`VitisSemanticFPN` (registered in ``mmdet3d.registry.MODELS``) is
mmdet's ``ResNet`` + ``FPN`` with the Semantic FPN head of Kirillov et al.
(each pyramid level convolved and upsampled to 1/4 of the input, summed,
classified per pixel by a 1x1 conv, upsampled to the input size). It needs
no mmseg; it predicts ``num_classes`` scores per pixel (background + the ten
nuScenes detection classes by default) and trains with mmengine's Runner
from ``configs/pointpainting/semantic-fpn_r18_synthetic-cams.py``.

Painting code calls :meth:`VitisSemanticFPN.predict_scores` on RGB images
(0..255 floats) and gets per-pixel softmax scores back.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement, PixelData

from mmdet3d.registry import MODELS

from ..errors import UserInputError

IGNORE_INDEX = 255


class SegmenterError(UserInputError):
    """Bad segmenter settings or inputs."""


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """Semantic FPN head: level ``i`` (stride ``4 * 2**i``) gets
    ``max(i, 1)`` conv-BN-ReLU stages, each followed by a 2x upsample for
    ``i > 0``; the levels are summed at stride 4 and classified."""

    def __init__(self, in_channels: int, channels: int, num_levels: int,
                 num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for i in range(num_levels):
            stages = []
            for k in range(max(i, 1)):
                stages.append(_conv_bn_relu(in_channels if k == 0 else
                                            channels, channels))
            self.scale_heads.append(nn.ModuleList(stages))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return fuse_levels(feats, self.scale_heads, self.conv_seg,
                           self.dropout)


def fuse_levels(feats: Sequence[torch.Tensor], scale_heads: nn.ModuleList,
                conv_seg: nn.Module, dropout: Optional[nn.Module] = None,
                level_sizes: Optional[Sequence] = None) -> torch.Tensor:
    """The Semantic FPN head's forward: each level through its stages (2x
    bilinear upsampling after each stage above level 0), resized to level
    0's size where it differs (inputs not divisible by 32), summed,
    classified.  ``level_sizes`` gives those resizes up front (None per
    level: none) instead of comparing shapes at run time, which torch.fx
    cannot trace."""
    size = feats[0].shape[-2:]
    out = None
    for i, (feat, stages) in enumerate(zip(feats, scale_heads)):
        x = feat
        for stage in stages:
            x = stage(x)
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode='bilinear',
                                  align_corners=False)
        if level_sizes is None:
            target = size if x.shape[-2:] != size else None
        else:
            target = level_sizes[i]
        if target is not None:
            x = F.interpolate(x, size=target, mode='bilinear',
                              align_corners=False)
        out = x if out is None else out + x
    if dropout is not None:
        out = dropout(out)
    return conv_seg(out)


@MODELS.register_module()
class VitisSemanticFPN(BaseModel):
    """ResNet + FPN + Semantic FPN head, per-pixel class logits.

    Args:
        num_classes: output classes, background (0) included.
        backbone: mmdet ``ResNet`` settings (``depth=18`` by default; no
            pretrained weights are loaded unless ``init_cfg`` says so).
        neck: mmdet ``FPN`` settings; ``in_channels`` defaults to the
            backbone's stage widths.
        head_channels: width of the Semantic FPN head.
        class_weight: cross-entropy weight per class (``None``: plain CE).
        test_input_size: ``(H, W)`` that :meth:`predict_scores` resizes
            images to before the network (the training resolution), the
            scores being resized back; ``None`` keeps the input size.
        data_preprocessor: mmengine ``ImgDataPreprocessor`` settings (mean
            and std of the images as the dataset loads them, RGB).
    """

    def __init__(self,
                 num_classes: int = 11,
                 backbone: Optional[dict] = None,
                 neck: Optional[dict] = None,
                 head_channels: int = 64,
                 dropout: float = 0.1,
                 class_weight: Optional[Sequence[float]] = None,
                 loss_weight: float = 1.0,
                 ignore_index: int = IGNORE_INDEX,
                 test_input_size: Optional[Tuple[int, int]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(
                type='ImgDataPreprocessor',
                mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if num_classes < 2:
            raise SegmenterError(f'num_classes must be >= 2, got '
                                 f'{num_classes}')
        if class_weight is not None and len(class_weight) != num_classes:
            raise SegmenterError(
                f'class_weight has {len(class_weight)} entries for '
                f'{num_classes} classes')
        from mmdet.models.backbones import ResNet
        from mmdet.models.necks import FPN
        backbone_cfg = dict(depth=18, out_indices=(0, 1, 2, 3),
                            norm_cfg=dict(type='BN', requires_grad=True),
                            style='pytorch')
        backbone_cfg.update(backbone or {})
        backbone_cfg.pop('type', None)
        self.backbone = ResNet(**backbone_cfg)
        base = backbone_cfg.get('base_channels', 64)
        expansion = self.backbone.block.expansion
        stage_channels = [base * expansion * 2**i
                          for i in backbone_cfg['out_indices']]
        neck_cfg = dict(in_channels=stage_channels, out_channels=64,
                        num_outs=len(stage_channels))
        neck_cfg.update(neck or {})
        neck_cfg.pop('type', None)
        self.neck = FPN(**neck_cfg)
        self.head = SemanticFPNHead(neck_cfg['out_channels'], head_channels,
                                    neck_cfg['num_outs'], num_classes,
                                    dropout)
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.test_input_size = (tuple(test_input_size)
                                if test_input_size else None)
        self.register_buffer(
            'class_weight',
            torch.tensor(class_weight, dtype=torch.float32)
            if class_weight is not None else None, persistent=False)

    # ------------------------------------------------------------------
    def _forward(self, inputs: torch.Tensor,
                 data_samples=None) -> torch.Tensor:
        """Logits ``(B, num_classes, H, W)`` at the input resolution."""
        feats = self.neck(self.backbone(inputs))
        logits = self.head(feats)
        return F.interpolate(logits, size=inputs.shape[-2:],
                             mode='bilinear', align_corners=False)

    def forward(self, inputs: torch.Tensor,
                data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor'
                ) -> Union[Dict[str, torch.Tensor], list, torch.Tensor]:
        if mode == 'tensor':
            return self._forward(inputs)
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise SegmenterError(f'unknown mode {mode!r} (loss, predict, '
                             f'tensor)')

    def loss(self, inputs: torch.Tensor,
             data_samples: List[BaseDataElement]) -> Dict[str, torch.Tensor]:
        if not data_samples or 'gt_sem_seg' not in data_samples[0]:
            raise SegmenterError('loss mode needs data samples with '
                                 'gt_sem_seg')
        logits = self._forward(inputs)
        target = torch.stack([
            s.gt_sem_seg.data.reshape(logits.shape[-2:])
            for s in data_samples]).long().to(logits.device)
        loss = F.cross_entropy(logits, target, weight=self.class_weight,
                               ignore_index=self.ignore_index)
        with torch.no_grad():
            valid = target != self.ignore_index
            acc = ((logits.argmax(1) == target) & valid).sum() / \
                valid.sum().clamp(min=1)
        return dict(loss_ce=loss * self.loss_weight, acc_seg=acc)

    def predict(self, inputs: torch.Tensor,
                data_samples: Optional[List[BaseDataElement]] = None
                ) -> List[BaseDataElement]:
        """``pred_sem_seg`` (and ``seg_logits``) per image, at the size of
        its ``gt_sem_seg`` when it has one (e.g. the full-resolution mask),
        else at the input size."""
        logits = self._forward(inputs)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(logits))]
        for logit, sample in zip(logits, data_samples):
            logit = logit[None]
            if 'gt_sem_seg' in sample:
                size = sample.gt_sem_seg.data.shape[-2:]
                if tuple(size) != tuple(logit.shape[-2:]):
                    logit = F.interpolate(logit, size=tuple(size),
                                          mode='bilinear',
                                          align_corners=False)
            sample.pred_sem_seg = PixelData(data=logit[0].argmax(0,
                                                                 True))
        return data_samples

    # ------------------------------------------------------------------
    @torch.no_grad()
    def predict_scores(self, images: torch.Tensor,
                       input_size: Optional[Tuple[int, int]] = None,
                       bgr: bool = False) -> torch.Tensor:
        """Per-pixel class probabilities for painting.

        Args:
            images: ``(B, 3, H, W)`` float RGB images with values 0..255
                (normalized here with the data preprocessor's mean/std).
            input_size: ``(h, w)`` the network sees; default
                ``test_input_size`` (the training resolution), ``None``
                there meaning ``(H, W)``.
            bgr: the images are BGR (as ``mmcv.imread`` and mmdet3d's
                image loaders give them); flipped to RGB here.

        Returns:
            ``(B, num_classes, H, W)`` softmax scores (sum 1 per pixel).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise SegmenterError(f'predict_scores expects (B, 3, H, W) '
                                 f'images, got {tuple(images.shape)}')
        was_training = self.training
        self.eval()
        try:
            param = next(self.parameters())
            x = images.to(param.device, torch.float32)
            if bgr:
                x = x.flip(1)
            pre = self.data_preprocessor
            if getattr(pre, '_enable_normalize', False):
                x = (x - pre.mean) / pre.std
            size = tuple(images.shape[-2:])
            net_size = input_size or self.test_input_size or size
            if tuple(net_size) != size:
                x = F.interpolate(x, size=tuple(net_size), mode='bilinear',
                                  align_corners=False)
            logits = self._forward(x)
            if tuple(logits.shape[-2:]) != size:
                logits = F.interpolate(logits, size=size, mode='bilinear',
                                       align_corners=False)
            return logits.softmax(1)
        finally:
            self.train(was_training)
