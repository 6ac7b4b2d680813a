"""nuScenes detection metric restricted to what some cameras see.

A model that only gets the points inside one camera's image (the contest's
CAM_FRONT PointPainting task) cannot find objects outside that image, yet
``NuScenesMetric`` counts every ground-truth box within the class range all
around the car: recall, hence AP, is capped by the camera's field of view.
``VitisCameraViewNuScenesMetric`` keeps only the ground-truth boxes and the
predictions whose centre projects inside one of the given camera images with
depth > ``min_depth`` (the painting transform's rule for points), so the
figures measure the detector, not its field of view.
"""
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmdet3d.evaluation.metrics import NuScenesMetric
from mmdet3d.registry import METRICS

from ..painting.projection import project_to_image

__all__ = ['VitisCameraViewNuScenesMetric', 'centres_in_view',
           'filter_eval_boxes_in_view']


def centres_in_view(xyz: np.ndarray, cameras: Sequence[Tuple],
                    min_depth: float = 1.0) -> np.ndarray:
    """Which LiDAR-frame points one of the cameras sees.

    Args:
        xyz: ``(N, 3)`` points (box centres) in the LiDAR frame.
        cameras: ``(lidar2cam, cam2img, (H, W))`` per camera.
        min_depth: depth along the optical axis a point must exceed.

    Returns:
        ``(N,)`` bool: seen by at least one camera.
    """
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    seen = np.zeros(len(xyz), bool)
    for lidar2cam, cam2img, image_hw in cameras:
        seen |= project_to_image(xyz, lidar2cam, cam2img, image_hw,
                                 min_depth)[2]
    return seen


def _global2lidar(info: dict) -> np.ndarray:
    lidar2global = (np.asarray(info['ego2global'], np.float64)
                    @ np.asarray(info['lidar_points']['lidar2ego'],
                                 np.float64))
    return np.linalg.inv(lidar2global)


def filter_eval_boxes_in_view(nusc, eval_boxes, infos: Dict[str, dict],
                              cameras: Sequence[str],
                              min_depth: float = 1.0):
    """Drop from devkit ``EvalBoxes`` (global frame) every box whose centre
    none of ``cameras`` sees; in place, like the devkit's
    ``filter_eval_boxes``, and returned.

    Args:
        nusc: the ``NuScenes`` db (image sizes of the camera sample data).
        eval_boxes: ``EvalBoxes`` of ground truth or predictions.
        infos: mmdet3d infos (``ego2global``, ``lidar_points.lidar2ego``,
            ``images[CAM].lidar2cam / cam2img / sample_data_token``) by
            sample token.
        cameras: camera names, e.g. ``['CAM_FRONT']``.
        min_depth: see :func:`centres_in_view`.
    """
    for token in eval_boxes.sample_tokens:
        boxes = eval_boxes.boxes[token]
        if not boxes:
            continue
        info = infos[token]
        views = []
        for cam in cameras:
            image = info['images'][cam]
            data = nusc.get('sample_data', image['sample_data_token'])
            views.append((image['lidar2cam'], image['cam2img'],
                          (data['height'], data['width'])))
        g2l = _global2lidar(info)
        centres = np.array([box.translation for box in boxes], np.float64)
        centres = centres @ g2l[:3, :3].T + g2l[:3, 3]
        keep = centres_in_view(centres, views, min_depth)
        eval_boxes.boxes[token] = [b for b, k in zip(boxes, keep) if k]
    return eval_boxes


def _camera_view_eval(nusc, *args, eval_cls, infos, cameras, min_depth,
                      **kwargs):
    """The devkit's ``NuScenesEval`` (``eval_cls``) with both box sets
    filtered to the cameras' view once it has loaded them (global frame,
    class ranges and empty boxes already applied) and before it evaluates
    anything."""
    nusc_eval = eval_cls(nusc, *args, **kwargs)
    for boxes in (nusc_eval.gt_boxes, nusc_eval.pred_boxes):
        filter_eval_boxes_in_view(nusc, boxes, infos, cameras, min_depth)
    return nusc_eval


@METRICS.register_module()
class VitisCameraViewNuScenesMetric(NuScenesMetric):
    """``NuScenesMetric`` over the boxes whose centre some camera sees.

    Args:
        cameras: camera names of the infos' ``images`` (the view is their
            union), e.g. ``['CAM_FRONT']``.
        min_depth: a centre must lie deeper than this (metres along the
            optical axis), as painted points do.
        **kwargs: ``NuScenesMetric``'s.

    Where it hooks in: the ground truth exists only inside the devkit's
    ``NuScenesEval``, which loads it from the ``v1.0-*`` tables (and the
    predictions from mmdet3d's json) in its constructor and evaluates in
    ``main()``. So the filter sits between the two, applied to both
    ``EvalBoxes`` alike; mmdet3d builds that object inside
    ``_evaluate_single`` (a local import), so this class swaps the devkit's
    class for a filtering factory for the duration of that call. Formatting,
    matching, AP/TP computation and the metric names stay mmdet3d's and the
    devkit's, unchanged.
    """

    def __init__(self, cameras: Sequence[str] = ('CAM_FRONT', ),
                 min_depth: float = 1.0, **kwargs) -> None:
        if isinstance(cameras, str) or not cameras:
            raise ValueError(f'cameras must be a non-empty list of camera '
                             f'names, got {cameras!r}')
        # distinct keys, so it can sit beside NuScenesMetric in one evaluator
        kwargs.setdefault('prefix', 'NuScenes camera-view metric')
        super().__init__(**kwargs)
        self.cameras = list(cameras)
        self.min_depth = float(min_depth)

    def _evaluate_single(self, result_path: str,
                         classes: Optional[List[str]] = None,
                         result_name: str = 'pred_instances_3d'
                         ) -> Dict[str, float]:
        from nuscenes.eval.detection import evaluate
        infos = {info['token']: info for info in self.data_infos}
        devkit_eval = evaluate.NuScenesEval
        evaluate.NuScenesEval = functools.partial(
            _camera_view_eval, eval_cls=devkit_eval, infos=infos,
            cameras=self.cameras, min_depth=self.min_depth)
        try:
            return super()._evaluate_single(result_path, classes, result_name)
        finally:
            evaluate.NuScenesEval = devkit_eval
