"""VitisCameraViewNuScenesMetric: boxes filtered to a camera's view."""
import math

import numpy as np
import pytest
import torch

# LiDAR x right, y forward, z up -> camera x right, y down, z forward
LIDAR2CAM = np.array([[1., 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0],
                      [0, 0, 0, 1]])
CAM2IMG = np.array([[800., 0, 800], [0, 800, 450], [0, 0, 1]])
IMAGE_HW = (900, 1600)
FRONT = (LIDAR2CAM, CAM2IMG, IMAGE_HW)


def test_centres_in_view_hand_made_camera():
    from mmdet3d_vitis.datasets import centres_in_view
    xyz = np.array([
        [0, 10, 0],     # straight ahead: principal point
        [7, 10, -5],    # ahead, inside the image (u 1360, v 850)
        [0, -10, 0],    # behind the camera
        [30, 10, 0],    # ahead but right of the image (u 3200)
        [0, 10, 8],     # ahead but above the image (v -190)
        [0, 0.5, 0],    # in the image, closer than min_depth
    ])
    assert centres_in_view(xyz, [FRONT], min_depth=1.0).tolist() == [
        True, True, False, False, False, False]
    assert centres_in_view(xyz[5:], [FRONT], min_depth=0.1).tolist() == [
        True]
    # a second camera looking backwards: the view is the union
    back = (np.diag([-1., 1, -1, 1]) @ LIDAR2CAM, CAM2IMG, IMAGE_HW)
    assert centres_in_view(xyz, [FRONT, back]).tolist() == [
        True, True, True, False, False, False]


class _Tables:
    """The one devkit table lookup the filter makes (camera image size)."""

    def get(self, table, token):
        assert (table, token) == ('sample_data', 'cam_sd')
        return dict(height=IMAGE_HW[0], width=IMAGE_HW[1])


def test_filter_eval_boxes_global_frame():
    """Boxes come in the global frame: the filter goes through ego2global
    and lidar2ego before the camera."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    from mmdet3d_vitis.datasets import filter_eval_boxes_in_view
    yaw = math.pi / 2  # the ego faces global +y ...
    ego2global = np.eye(4)
    ego2global[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0],
                          [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]
    ego2global[:3, 3] = [100, 200, 0]
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = [1, 0, 2]  # ... and its LiDAR looks along ego +y
    info = dict(ego2global=ego2global,
                lidar_points=dict(lidar2ego=lidar2ego),
                images=dict(CAM_FRONT=dict(
                    lidar2cam=LIDAR2CAM, cam2img=CAM2IMG,
                    sample_data_token='cam_sd')))

    def box(lidar_xyz):
        xyz = (ego2global @ lidar2ego @ np.append(lidar_xyz, 1))[:3]
        return DetectionBox(sample_token='s', translation=tuple(xyz),
                            size=(1, 1, 1), rotation=(1, 0, 0, 0),
                            detection_name='car')

    boxes = EvalBoxes()
    seen, behind, aside = box([0, 20, 0]), box([0, -20, 0]), box([40, 5, 0])
    boxes.add_boxes('s', [seen, behind, aside])
    out = filter_eval_boxes_in_view(_Tables(), boxes, {'s': info},
                                    ['CAM_FRONT'])
    assert out is boxes and boxes['s'] == [seen]


@pytest.fixture(scope='module')
def perfect_results(tiny_synthetic_root):
    """Ground truth as predictions (score 1) for every car / pedestrian
    box with points whose centre CAM_FRONT sees, from the val infos."""
    import mmengine
    from mmdet3d.structures import LiDARInstance3DBoxes
    from nuscenes import NuScenes

    from mmdet3d_vitis.datasets import centres_in_view
    root = tiny_synthetic_root + '/'
    nusc = NuScenes('v1.0-mini', dataroot=root, verbose=False)
    infos = mmengine.load(root + 'nuscenes_infos_val.pkl')['data_list']
    label_map = {0: 0, 7: 1}  # nuScenes order -> (car, pedestrian)
    results, in_view, out_of_view = [], 0, 0
    for idx, info in enumerate(infos):
        cam = info['images']['CAM_FRONT']
        sd = nusc.get('sample_data', cam['sample_data_token'])
        view = (cam['lidar2cam'], cam['cam2img'], (sd['height'], sd['width']))
        boxes, labels = [], []
        for inst in info['instances']:
            if (inst['bbox_label_3d'] not in label_map
                    or inst['num_lidar_pts'] + inst['num_radar_pts'] == 0):
                continue
            b = np.asarray(inst['bbox_3d'], np.float64)
            if not centres_in_view(b[None, :3], [view], 1.0)[0]:
                out_of_view += 1
                continue
            in_view += 1
            boxes.append(np.concatenate([b, np.nan_to_num(inst['velocity'])]))
            labels.append(label_map[inst['bbox_label_3d']])
        n = len(boxes)
        results.append(dict(
            sample_idx=idx, pred_instances=dict(),
            pred_instances_3d=dict(
                bboxes_3d=LiDARInstance3DBoxes(
                    torch.tensor(np.reshape(boxes, (n, 9)),
                                 dtype=torch.float32),
                    box_dim=9, origin=(0.5, 0.5, 0.5)),
                scores_3d=torch.ones(n),
                labels_3d=torch.tensor(labels, dtype=torch.long))))
    # the point of the test: ground truth the camera cannot see exists
    assert in_view > 0 and out_of_view > 0, (in_view, out_of_view)
    return root, results


def _metric(root, **kwargs):
    from mmdet3d.registry import METRICS

    import mmdet3d_vitis  # noqa: F401  (registers the metric)
    metric = METRICS.build(dict(
        data_root=root, ann_file=root + 'nuscenes_infos_val.pkl', **kwargs))
    metric.dataset_meta = dict(classes=['car', 'pedestrian'],
                               version='v1.0-mini')
    return metric


def _car_ap(metrics):
    aps = [v for k, v in metrics.items() if '/car_AP_dist_' in k]
    assert len(aps) == 4, metrics
    return np.mean(aps)


def _with_car_behind(results):
    """``results`` plus, in the first frame with a car, that car mirrored
    behind the LiDAR with the top score (a false positive if counted)."""
    from mmdet3d.structures import LiDARInstance3DBoxes
    first = next(r for r in results
                 if (r['pred_instances_3d']['labels_3d'] == 0).any())
    pred = first['pred_instances_3d']
    boxes = pred['bboxes_3d'].tensor
    behind = boxes[pred['labels_3d'] == 0][:1].clone()
    behind[:, 1] = -behind[:, 1]
    extra = dict(first, pred_instances_3d=dict(
        bboxes_3d=LiDARInstance3DBoxes(torch.cat([boxes, behind]),
                                       box_dim=9),
        scores_3d=torch.cat([pred['scores_3d'], torch.tensor([2.0])]),
        labels_3d=torch.cat([pred['labels_3d'], torch.tensor([0])])))
    return [extra if r is first else r for r in results]


def test_perfect_in_view_predictions_score_ap_1(perfect_results):
    from nuscenes.eval.detection import evaluate
    root, results = perfect_results
    devkit_eval = evaluate.NuScenesEval
    plain = _metric(root, type='NuScenesMetric').compute_metrics(results)
    view_metric = _metric(root, type='VitisCameraViewNuScenesMetric',
                          cameras=['CAM_FRONT'], min_depth=1.0)
    view = view_metric.compute_metrics(results)
    assert evaluate.NuScenesEval is devkit_eval  # swapped back
    # both can run in one evaluator: no metric name is shared
    assert view_metric.prefix == 'NuScenes camera-view metric'
    assert not {f'{view_metric.prefix}/{k}' for k in view} & {
        f'NuScenes metric/{k}' for k in plain}
    # out-of-view ground truth are misses for the plain metric only
    assert _car_ap(plain) < 0.9
    assert _car_ap(view) == pytest.approx(1.0, abs=1e-3)
    # predictions are filtered too: one behind the car is dropped, not a
    # false positive (the plain metric counts it)
    extra = _with_car_behind(results)
    assert _car_ap(view_metric.compute_metrics(extra)) == pytest.approx(
        1.0, abs=1e-3)
    assert _car_ap(_metric(root, type='NuScenesMetric').compute_metrics(
        extra)) < _car_ap(plain)


def test_cameras_must_be_a_list():
    from mmdet3d_vitis.datasets import VitisCameraViewNuScenesMetric
    with pytest.raises(ValueError, match='cameras'):
        VitisCameraViewNuScenesMetric(cameras='CAM_FRONT', data_root='x/',
                                      ann_file='x/a.pkl')


@pytest.mark.parametrize('name', [
    'pointpainting_pointpillars-small_contest-synthetic-3d.py',
    'pointpillars-small_unpainted_contest-synthetic-3d.py',
    'pointpainting_pointpillars-small_contest-synthetic-3d_qat.py'])
def test_contest_configs_evaluate_in_the_front_camera_view(name):
    import os.path as osp

    from mmdet3d.registry import METRICS
    from mmengine.config import Config

    from conftest import REPO
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'pointpainting', name))
    for split in ('val', 'test'):
        evaluator = cfg[f'{split}_evaluator']
        assert evaluator.type == 'VitisCameraViewNuScenesMetric'
        assert evaluator.cameras == ['CAM_FRONT']
        assert METRICS.get(evaluator.type) is not None
    # per-class assigners, the pedestrian one at the reference's IoUs
    car, ped = cfg.model.train_cfg.pts.assigner
    assert (car.pos_iou_thr, car.neg_iou_thr) == (0.6, 0.45)
    assert (ped.pos_iou_thr, ped.neg_iou_thr, ped.min_pos_iou) == (
        0.35, 0.2, 0.2)
    assert cfg.model.pts_bbox_head.assign_per_class
