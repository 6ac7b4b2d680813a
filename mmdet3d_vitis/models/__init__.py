"""Model components registered in ``mmdet3d.registry.MODELS``."""
from .dense_heads import VitisAnchor3DHead
from .spconv_cpu import patch_spconv_cpu_backward
from .voxel_encoders import VitisRadiusVFE

patch_spconv_cpu_backward()

__all__ = ['VitisAnchor3DHead', 'VitisRadiusVFE', 'patch_spconv_cpu_backward']
