"""The contest reference PointPainting port (configs/pointpainting/):
VitisRadiusVFE against an independent computation, the SpMiddleFHD encoder's
BEV output on the real nuScenes frame painted through the front camera
(the reference's (1, 128, 248, 124) transposed: nuScenes' LiDAR looks along
+y, the reference's frame along +x), and VitisAnchor3DHead's class-agnostic
NMS against "best class per anchor, then one NMS"."""
import copy
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import mmdet3d_vitis  # noqa: F401
from mmdet3d.models.layers import nms_bev
from mmdet3d.registry import DATASETS, MODELS
from mmdet3d.structures import LiDARInstance3DBoxes, xywhr2xyxyr

from conftest import REPO

PORT_CONFIG = osp.join(
    REPO, 'configs', 'pointpainting',
    'pointpainting_second-fhd_rpnv2_contest-synthetic-3d.py')


@pytest.fixture(scope='module')
def cfg():
    return Config.fromfile(PORT_CONFIG)


def real_frame_sample(cfg, demo_dir):
    """The real nuScenes frame through the port's test pipeline, painted
    through the front camera by the ground-truth oracle (no masks there)."""
    pkl = glob.glob(osp.join(demo_dir, '*.pkl'))[0]
    painting = dict(cfg.painting, source='oracle', mask_root=None,
                    class_map={0: 1, 7: 2}, img_root=demo_dir)
    pipeline = [
        cfg.load_points,
        dict(type='LoadAnnotations3D', with_bbox_3d=True,
             with_label_3d=True),
        painting,
        dict(type='PointsRangeFilter',
             point_cloud_range=cfg.point_cloud_range),
        dict(type='Pack3DDetInputs', keys=['points']),
    ]
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.update(data_root=demo_dir + '/', ann_file=pkl, pipeline=pipeline,
                  test_mode=False, filter_empty_gt=False,
                  modality=dict(use_lidar=True, use_camera=False),
                  data_prefix=dict(pts='', img='', sweeps=''),
                  metainfo=dict(classes=cfg.class_names))
    return DATASETS.build(ds_cfg)[0]


def test_radius_vfe_matches_an_independent_computation():
    from mmdet3d_vitis.models import VitisRadiusVFE
    rng = np.random.default_rng(0)
    m, p, f = 50, 5, 7
    num = rng.integers(1, p + 1, m)
    feats = np.zeros((m, p, f), np.float32)
    for i in range(m):
        feats[i, :num[i]] = rng.normal(size=(num[i], f))
    out = VitisRadiusVFE(f)(torch.from_numpy(feats), torch.from_numpy(num),
                            None).numpy()
    assert out.shape == (m, 6)
    for i in range(m):
        pts = feats[i, :num[i]].astype(np.float64)
        mean = [sum(pts[k, j] for k in range(num[i])) / num[i]
                for j in range(f)]
        want = [np.hypot(mean[0], mean[1])] + mean[2:]
        np.testing.assert_allclose(out[i], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='features'):
        VitisRadiusVFE(4)(torch.from_numpy(feats), torch.from_numpy(num),
                          None)


def test_encoder_output_on_the_real_frame(cfg, nuscenes_demo_dir):
    sample = real_frame_sample(cfg, nuscenes_demo_dir)
    points = sample['inputs']['points']
    assert points.shape[1] == 7  # x, y, z, intensity, bg / car / person
    # the front camera looks along +y in nuScenes' LIDAR_TOP frame
    assert (points[:, 1] >= 0).all() and (points[:, 0] < 0).any() and (
        points[:, 0] > 0).any()
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    data = model.data_preprocessor(pseudo_collate([sample]), False)
    vox = data['inputs']['voxels']
    with torch.no_grad():
        feats = model.voxel_encoder(vox['voxels'], vox['num_points'],
                                    vox['coors'])
        assert feats.shape == (vox['voxels'].shape[0], 6)
        bev = model.middle_encoder(feats, vox['coors'], 1)
    # the reference's (1, 128, 248, 124) on its x-forward frame, transposed
    assert tuple(bev.shape) == (1, 128, 124, 248)
    assert bev.abs().sum() > 0


def _head(cfg, agnostic=True):
    head_cfg = copy.deepcopy(cfg.model.bbox_head)
    head_cfg.update(train_cfg=None, test_cfg=copy.deepcopy(
        cfg.model.test_cfg))
    head_cfg.test_cfg.class_agnostic_nms = agnostic
    torch.manual_seed(0)
    return MODELS.build(head_cfg).eval()


def test_class_agnostic_nms_is_best_class_then_one_nms(cfg):
    head = _head(cfg)
    torch.manual_seed(1)
    h, w = 62, 31  # a small map: the anchors still span the range
    a = head.num_anchors
    cls = torch.randn(1, a * 2, h, w) * 2 - 1
    reg = torch.randn(1, a * 7, h, w) * 0.1
    dirc = torch.randn(1, a * 2, h, w)
    meta = [dict(box_type_3d=LiDARInstance3DBoxes)]
    with torch.no_grad():
        got = head.predict_by_feat([cls], [reg], [dirc], meta)[0]
    # independent: best class per anchor, score threshold, one NMS
    t = head.test_cfg
    anchors = head.prior_generator.grid_anchors(
        [(h, w)], device='cpu')[0].reshape(-1, 7)
    scores = cls[0].permute(1, 2, 0).reshape(-1, 2).sigmoid()
    deltas = reg[0].permute(1, 2, 0).reshape(-1, 7)
    best, label = scores.max(1)
    top = best.topk(t.nms_pre)[1]
    boxes = head.bbox_coder.decode(anchors[top], deltas[top])
    best, label = best[top], label[top]
    ok = best > t.score_thr
    bev = LiDARInstance3DBoxes(boxes[ok]).bev
    keep = nms_bev(xywhr2xyxyr(bev), best[ok], t.nms_thr)[:t.max_num]
    want_scores = best[ok][keep]
    want_labels = label[ok][keep]
    assert len(got) == len(keep) > 5
    order = got.scores_3d.argsort(descending=True)
    torch.testing.assert_close(got.scores_3d[order], want_scores)
    assert torch.equal(got.labels_3d[order], want_labels)
    # kept boxes of any two classes overlap by less than nms_thr
    from mmcv.ops import box_iou_rotated
    iou = box_iou_rotated(got.bboxes_3d.bev, got.bboxes_3d.bev)
    iou.fill_diagonal_(0)
    assert iou.max() < t.nms_thr + 1e-6
    # off: exactly mmdet3d's per-class NMS
    with torch.no_grad():
        per_class = _head(cfg, agnostic=False).predict_by_feat(
            [cls], [reg], [dirc], meta)[0]
    assert len(per_class) >= len(got)


def test_one_training_step_on_painted_synthetic_data(cfg,
                                                     tiny_synthetic_root):
    """The config's own train pipeline (front-camera mask painting, car and
    pedestrian) feeds the model; one loss step gives finite losses and
    gradients in the VFE-less sparse middle."""
    from mmdet3d_vitis.config_utils import data_root_options
    c = copy.deepcopy(cfg)
    root = tiny_synthetic_root + '/'
    c.merge_from_dict(dict(
        (k.split('=')[0], k.split('=')[1])
        for k in data_root_options(root)))
    ds_cfg = c.train_dataloader.dataset
    ds_cfg.pipeline[2].mask_root = root + 'seg_masks'
    ds = DATASETS.build(ds_cfg)
    batch = pseudo_collate([ds[0], ds[1]])
    assert batch['inputs']['points'][0].shape[1] == 7
    torch.manual_seed(0)
    model = MODELS.build(c.model).train()
    data = model.data_preprocessor(batch, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grad = model.middle_encoder.conv_input[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_port_partitions_with_the_sparse_middle_on_the_cpu(
        cfg, nuscenes_demo_dir, tmp_path):
    """The DPU partition of the port: radius VFE and spconv middle on the
    CPU, SECOND + SECONDFPN + head one DPU subgraph; the partitioned model
    predicts what the detector predicts, and the inspector names the CPU
    ops."""
    from mmdet3d_vitis.quantization.inspector import inspect_detector
    from mmdet3d_vitis.quantization.partitioned_detector import \
        VitisPartitionedDetector
    batch = pseudo_collate([real_frame_sample(cfg, nuscenes_demo_dir)])
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    head = model.bbox_head
    torch.nn.init.normal_(head.conv_cls.weight, std=0.05)  # some boxes
    part = VitisPartitionedDetector(model).eval()
    assert part.subgraph_names == ['bev']
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        ref = model.predict(data['inputs'], data['data_samples'])[0]
        got = part.predict(data['inputs'], data['data_samples'])[0]
    a, b = ref.pred_instances_3d, got.pred_instances_3d
    assert len(a.scores_3d) > 0
    torch.testing.assert_close(b.scores_3d, a.scores_3d)
    torch.testing.assert_close(b.bboxes_3d.tensor, a.bboxes_3d.tensor)
    assert a.bboxes_3d.tensor.shape[1] == 9  # zero velocity padded
    report = inspect_detector(model, batch['inputs']['points'])
    cpu = {layer.op: layer.reason for layer in report.cpu_layers()}
    print('\nCPU ops of the port:', sorted(cpu))
    assert {'SubMConv3d', 'SparseConv3d'} <= set(cpu), cpu
    assert 'VitisRadiusVFE' in ' '.join(cpu) or any(
        'voxel_encoder' in layer.name for layer in report.cpu_layers())
    assert 0.3 < report.dpu_share < 1
    print(f'DPU share of MACs: {100 * report.dpu_share:.1f}%')
