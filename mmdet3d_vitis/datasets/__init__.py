"""Datasets: the synthetic nuScenes-format generator (embedded default data)
and :class:`VitisCameraViewNuScenesMetric` (registered in
``mmdet3d.registry.METRICS``)."""
from .camera_view_metric import (VitisCameraViewNuScenesMetric,
                                 centres_in_view, filter_eval_boxes_in_view)

__all__ = ['VitisCameraViewNuScenesMetric', 'centres_in_view',
           'filter_eval_boxes_in_view']
