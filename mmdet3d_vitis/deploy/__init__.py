"""Deploy runtime: run a deployed detector frame without mmdet3d models.

This package holds the CPU glue of a deployed PointPillars-style detector,
in plain numpy (:mod:`mmdet3d_vitis.deploy.glue`): input checks, hard
voxelization, pillar decoration, BEV scatter and anchor decoding with
rotated NMS.  The parts that load the deploy directory and run the DPU
subgraphs through ONNX Runtime (the ``Pipeline``) come later.
"""
from .glue import (AnchorDecoder, DeployInputError, PointCloudError,
                   VoxelOverflowError, check_points, decorate_pillars,
                   nms_rotated_bev, rotated_iou_bev, scatter_pillars,
                   voxelize)

__all__ = [
    'AnchorDecoder', 'DeployInputError', 'PointCloudError',
    'VoxelOverflowError', 'check_points', 'decorate_pillars',
    'nms_rotated_bev', 'rotated_iou_bev', 'scatter_pillars', 'voxelize'
]
