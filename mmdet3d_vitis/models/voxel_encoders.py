"""Voxel encoders of the ported reference models."""
import torch
from mmdet3d.registry import MODELS
from torch import Tensor, nn

__all__ = ['VitisRadiusVFE']


@MODELS.register_module()
class VitisRadiusVFE(nn.Module):
    """second.pytorch's ``SimpleVoxelRadius`` (the 6th AI Edge Contest
    reference): the mean of each voxel's points, returned as
    ``[|mean_xy|, mean_z, mean of the other features...]``.

    No parameters.  With the reference's 7-dim painted points (x, y, z,
    intensity, 3 class scores) that is 6 channels.

    Args:
        num_features: point feature width (>= 3).
    """

    def __init__(self, num_features: int = 4):
        super().__init__()
        if int(num_features) < 3:
            raise ValueError(f'num_features must be >= 3, got {num_features}')
        self.num_features = int(num_features)
        self.out_channels = self.num_features - 1

    def forward(self, features: Tensor, num_points: Tensor, coors: Tensor,
                *args, **kwargs) -> Tensor:
        """``features`` (M, P, F) with zero padding beyond ``num_points``;
        returns (M, F - 1)."""
        if features.shape[-1] != self.num_features:
            raise ValueError(
                f'VitisRadiusVFE: points have {features.shape[-1]} features, '
                f'the config says num_features={self.num_features}')
        mean = features[:, :, :self.num_features].sum(dim=1) / \
            num_points.type_as(features).clamp(min=1).view(-1, 1)
        radius = torch.norm(mean[:, :2], p=2, dim=1, keepdim=True)
        return torch.cat([radius, mean[:, 2:]], dim=1).contiguous()
