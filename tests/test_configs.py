"""Configs inherit from mmdet3d, import the plugin, and fail clearly."""
import glob
import os.path as osp

import pytest

from mmdet3d_vitis.config_utils import ConfigError, load_config

from conftest import REPO, SMALL_PP_CONFIG, ZOO_PP_CONFIG


def test_zoo_mirror_matches_the_zoo_model():
    cfg = load_config(ZOO_PP_CONFIG, check_data=False)
    model = cfg.model
    layer = model.data_preprocessor.voxel_layer
    assert layer.voxel_size == [0.25, 0.25, 8]
    assert layer.point_cloud_range == [-50, -50, -5, 50, 50, 3]
    assert layer.max_num_points == 64
    assert tuple(layer.max_voxels) == (30000, 40000)
    assert model.pts_voxel_encoder.type == 'PillarFeatureNet'
    assert model.pts_voxel_encoder.in_channels == 5
    assert model.pts_backbone.layer_nums == [3, 5, 5]
    assert model.pts_neck.type == 'SECONDFPN'
    assert model.pts_neck.out_channels == [128, 128, 128]
    head = model.pts_bbox_head
    assert head.type == 'Anchor3DHead' and head.num_classes == 10
    assert len(head.anchor_generator.sizes) == 7
    assert head.anchor_generator.rotations == [0, 1.57]
    for split in ('train', 'test'):
        sweeps = cfg[f'{split}_dataloader'].dataset.pipeline[1]
        assert sweeps.type == 'LoadPointsFromMultiSweeps'
        assert sweeps.use_dim == [0, 1, 2, 3, 4]  # intensity kept


def test_small_variant_inherits_the_mirror():
    text = open(SMALL_PP_CONFIG).read()
    assert "_base_ = ['./pointpillars_zoo-40000x64_secfpn_nus-3d.py']" in text
    cfg = load_config(SMALL_PP_CONFIG, check_data=False)
    assert cfg.model.pts_middle_encoder.output_shape == [200, 200]
    assert cfg.model.pts_voxel_encoder.voxel_size == [0.5, 0.5, 8]
    assert cfg.train_dataloader.dataset.data_root == 'data/synthetic/'
    assert cfg.model.pts_bbox_head.num_classes == 10


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match='config file not found'):
        load_config(str(tmp_path / 'none.py'))


def test_config_without_plugin_import(tmp_path):
    path = tmp_path / 'no_plugin.py'
    path.write_text(
        "_base_ = ['mmdet3d::pointpillars/"
        "pointpillars_hv_secfpn_sbn-all_8xb4-2x_nus-3d.py']\n")
    with pytest.raises(ConfigError, match="does not import the mmdet3d_vitis"):
        load_config(str(path), check_data=False)


def test_missing_data_root_is_named(tmp_path):
    missing = str(tmp_path / 'no_such_root') + '/'
    with pytest.raises(ConfigError, match='no_such_root.*does not exist'):
        load_config(SMALL_PP_CONFIG, cfg_options={
            'train_dataloader.dataset.data_root': missing})


def test_missing_ann_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match='annotation file .*does not exist'):
        load_config(SMALL_PP_CONFIG, cfg_options={
            'test_dataloader.dataset.data_root': str(tmp_path) + '/'},
            splits=('test', ))


ALL_CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))


@pytest.mark.parametrize('path', ALL_CONFIGS,
                         ids=[osp.relpath(p, REPO) for p in ALL_CONFIGS])
def test_every_config_loads_and_builds_its_model(path):
    """Each config (its mmdet3d:: bases included) parses with the plugin
    imported and its model builds from the registries."""
    from mmdet3d.registry import MODELS
    cfg = load_config(path, check_data=False)
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
