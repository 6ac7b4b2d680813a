"""PointPainting: per-point class scores from the cameras.

:class:`VitisPointPainting` (registered in ``mmdet3d.registry.TRANSFORMS``)
paints points from segmentation masks or, as an oracle, from the
ground-truth boxes projected into the cameras.
"""
from .projection import PaintingError, project_to_image
from .transforms import ALL_CAMERAS, VitisPointPainting, render_box_labels
from .segmenter import VitisSemanticFPN
from .seg_dataset import (LoadCamImageAndMask, PackCamSegInputs,
                          VitisCamSegDataset)
from .seg_metric import VitisSegIoUMetric

__all__ = ['ALL_CAMERAS', 'PaintingError', 'VitisPointPainting',
           'project_to_image', 'render_box_labels', 'VitisSemanticFPN',
           'VitisCamSegDataset', 'LoadCamImageAndMask', 'PackCamSegInputs',
           'VitisSegIoUMetric']
