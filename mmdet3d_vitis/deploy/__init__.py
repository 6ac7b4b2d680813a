"""Deploy runtime: run a deployed detector frame without mmdet3d models.

This package holds the CPU glue of a deployed PointPillars-style detector,
in plain numpy (:mod:`mmdet3d_vitis.deploy.glue`): input checks, hard
voxelization, pillar decoration, BEV scatter and anchor decoding with
rotated NMS; :mod:`~mmdet3d_vitis.deploy.manifest` reads and checks a
deploy folder's ``pipeline.json`` and :class:`Pipeline`
(:mod:`~mmdet3d_vitis.deploy.pipeline`) runs a frame through the glue and
the DPU subgraphs' ONNX files with ONNX Runtime.
"""
from .glue import (AnchorDecoder, DeployInputError, PointCloudError,
                   ScatterCanvas, VoxelOverflowError, check_points,
                   decorate_pillars,
                   nms_rotated_bev, rotated_iou_bev, scatter_pillars,
                   voxelize)
from .manifest import MANIFEST_FILE, ManifestError, load_manifest
from .pipeline import STAGES, Pipeline
from .evaluate import (ConfigMismatchError, NoDetectionsError,
                       evaluate_pipeline)
from .bev_plot import plot_bev

__all__ = [
    'AnchorDecoder', 'DeployInputError', 'MANIFEST_FILE', 'ManifestError',
    'Pipeline', 'STAGES', 'load_manifest', 'PointCloudError',
    'ScatterCanvas',
    'VoxelOverflowError', 'check_points', 'decorate_pillars',
    'nms_rotated_bev', 'rotated_iou_bev', 'scatter_pillars', 'voxelize',
    'ConfigMismatchError', 'NoDetectionsError', 'evaluate_pipeline',
    'plot_bev'
]
