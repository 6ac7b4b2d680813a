"""The painted pillar configs (configs/pointpainting/): the contest-task
small PointPillars on 7-dim painted points, its unpainted baseline on the
same camera-view points, and the zoo pt_pointpainting_nuscenes mirror on
16-dim points.  Each config's own pipeline on a tiny synthetic frame feeds
its model, which the DPU partition splits as the unpainted ones (pillar
encoder + BEV on the DPU)."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import mmdet3d_vitis  # noqa: F401
from mmdet3d.registry import DATASETS, MODELS
from mmdet3d_vitis.config_utils import data_root_options
from mmdet3d_vitis.quantization.partitioned_detector import \
    VitisPartitionedDetector

from conftest import REPO

CONFIGS = {
    'painted': ('pointpainting_pointpillars-small_contest-synthetic-3d.py',
                7),
    'unpainted': ('pointpillars-small_unpainted_contest-synthetic-3d.py', 4),
    'zoo16': ('pointpainting_pointpillars_zoo-16dim_nus-3d.py', 16),
}


def _with_root(cfg, root):
    cfg = copy.deepcopy(cfg)
    cfg.merge_from_dict(dict(o.split('=', 1)
                             for o in data_root_options(root)))
    for loader in ('train_dataloader', 'test_dataloader'):
        ds = cfg[loader].dataset
        ds.data_root = root
        for t in ds.pipeline:
            if t['type'] == 'VitisPointPainting':
                t.mask_root = root + 'seg_masks'
    return cfg


@pytest.mark.parametrize('name', list(CONFIGS))
def test_painted_config_feeds_its_model_and_partitions(
        name, tiny_synthetic_root):
    file, dims = CONFIGS[name]
    cfg = _with_root(Config.fromfile(osp.join(REPO, 'configs',
                                              'pointpainting', file)),
                     tiny_synthetic_root + '/')
    test_set = DATASETS.build(cfg.test_dataloader.dataset)
    sample = test_set[0]
    points = sample['inputs']['points']
    assert points.shape[1] == dims
    if name != 'unpainted':
        painted = points[:, -(11 if name == 'zoo16' else 3):]
        assert set(painted.sum(1).unique().tolist()) <= {0.0, 1.0}
        assert painted[:, 1:].sum() > 0  # some object points painted
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    train_batch = pseudo_collate([train_set[0]])
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    data = model.data_preprocessor(train_batch, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert all(torch.isfinite(v if isinstance(v, torch.Tensor) else
                              torch.stack(v)).all()
               for k, v in losses.items() if 'loss' in k)
    model.eval()
    part = VitisPartitionedDetector(model).eval()
    assert part.subgraph_names == ['pillar_encoder', 'bev']
    batch = pseudo_collate([sample])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        ref = model.predict(data['inputs'], data['data_samples'])[0]
        got = part.predict(data['inputs'], data['data_samples'])[0]
    torch.testing.assert_close(got.pred_instances_3d.scores_3d,
                               ref.pred_instances_3d.scores_3d)


def test_zoo_mirror_painted_by_the_segmenter(tiny_synthetic_root, tmp_path):
    """The zoo mirror as the zoo paints: the camera segmenter's argmax,
    one-hot over its 11 classes (here a seeded, untrained segmenter), on
    the mirror's 16-dim points; a missing segmenter checkpoint is named."""
    seg_config = osp.join(REPO, 'configs', 'pointpainting',
                          'semantic-fpn_r18_synthetic-cams.py')
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'seg.pth')
    torch.save({'state_dict': MODELS.build(
        Config.fromfile(seg_config).model).state_dict()}, ckpt)
    cfg = _with_root(Config.fromfile(osp.join(
        REPO, 'configs', 'pointpainting',
        'pointpainting_pointpillars_zoo-16dim_nus-3d_segmenter.py')),
        tiny_synthetic_root + '/')
    for t in cfg.test_dataloader.dataset.pipeline:
        if t['type'] == 'VitisPointPainting':
            assert t.source == 'segmenter'
            t.segmenter = dict(config=seg_config, checkpoint=ckpt)
    points = DATASETS.build(cfg.test_dataloader.dataset)[0]['inputs'][
        'points']
    assert points.shape[1] == 16
    painted = points[:, 5:]
    assert set(painted.sum(1).unique().tolist()) <= {0.0, 1.0}
    assert painted.sum() > 0.5 * len(points)  # most points are seen
    for t in cfg.test_dataloader.dataset.pipeline:
        if t['type'] == 'VitisPointPainting':
            t.segmenter = dict(config=seg_config,
                               checkpoint=str(tmp_path / 'missing.pth'))
    with pytest.raises(Exception, match='checkpoint'):
        DATASETS.build(cfg.test_dataloader.dataset)[0]
