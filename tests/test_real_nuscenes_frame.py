"""The real nuScenes frame in ../shared/data through the mirror config."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import mmdet3d_vitis  # noqa: F401
from mmdet3d.registry import DATASETS, MODELS
from mmdet3d.structures import Det3DDataSample

from conftest import ZOO_PP_CONFIG

CAMERAS = {'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
           'CAM_BACK_LEFT', 'CAM_BACK_RIGHT'}


@pytest.fixture(scope='module')
def mirror_cfg():
    return Config.fromfile(ZOO_PP_CONFIG)


@pytest.fixture(scope='module')
def real_dataset(mirror_cfg, nuscenes_demo_dir):
    ds_cfg = mirror_cfg.test_dataloader.dataset.copy()
    pkl = glob.glob(osp.join(nuscenes_demo_dir, '*.pkl'))[0]
    ds_cfg.update(
        data_root=nuscenes_demo_dir + '/', ann_file=pkl,
        data_prefix=dict(pts='', img='', sweeps=''))
    return DATASETS.build(ds_cfg)


def test_info_format(real_dataset, nuscenes_demo_dir):
    assert len(real_dataset) == 1
    info = real_dataset.get_data_info(0)
    assert set(info['images']) == CAMERAS
    for cam in CAMERAS:
        img = info['images'][cam]
        assert osp.isfile(osp.join(nuscenes_demo_dir, img['img_path']))
        assert np.asarray(img['cam2img']).shape == (3, 3)
        assert np.asarray(img['lidar2cam']).shape == (4, 4)
    assert len(info['instances']) == 69


def test_pipeline_keeps_intensity(real_dataset, nuscenes_demo_dir):
    points = real_dataset[0]['inputs']['points']
    lidar = glob.glob(osp.join(nuscenes_demo_dir, '*LIDAR_TOP*.bin'))[0]
    raw = np.fromfile(lidar, dtype=np.float32).reshape(-1, 5)
    assert points.shape[1] == 5
    # Column 3 is still the raw intensity (the stock config drops it);
    # column 4 is the sweep time offset, 0 for a lone key frame.
    assert set(np.unique(points[:, 3].numpy())) <= set(np.unique(raw[:, 3]))
    assert points[:, 3].max() > 10
    assert torch.all(points[:, 4] == 0)
    assert (points[:, :2].abs() <= 50).all()


def test_mirror_forward_on_real_frame(mirror_cfg, real_dataset):
    torch.manual_seed(0)
    model = MODELS.build(mirror_cfg.model).eval()
    data = model.data_preprocessor(pseudo_collate([real_dataset[0]]), False)
    voxels = data['inputs']['voxels']
    assert voxels['voxels'].shape[1:] == (64, 5)
    assert 1000 < voxels['voxels'].shape[0] <= 40000
    with torch.no_grad():
        results = model(**data, mode='predict')
    assert len(results) == 1 and isinstance(results[0], Det3DDataSample)
    pred = results[0].pred_instances_3d
    assert pred.bboxes_3d.tensor.shape[1] == 9  # x y z l w h yaw vx vy
    assert 0 < len(pred.scores_3d) <= mirror_cfg.model.test_cfg.pts.max_num
    assert ((pred.scores_3d >= 0) & (pred.scores_3d <= 1)).all()
    assert pred.labels_3d.max() < 10
