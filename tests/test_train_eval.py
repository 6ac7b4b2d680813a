"""tools/train.py and tools/test.py end to end on a tiny synthetic set."""
import os.path as osp

import pytest
import torch

from mmdet3d_vitis.checkpoint import CheckpointError
from mmdet3d_vitis.config_utils import ConfigError

from conftest import SMALL_PP_CONFIG, data_options, load_tool

# After one tiny epoch all scores are low: keep every box so the devkit has
# detections to match (it cannot evaluate an empty submission).
KEEP_ALL_BOXES = 'model.test_cfg.pts.score_thr=0.0'


@pytest.fixture(scope='module')
def trained(tiny_synthetic_root, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('train'))
    runner = load_tool('train').main([
        SMALL_PP_CONFIG, '--work-dir', work, '--cfg-options',
        *data_options(tiny_synthetic_root), KEEP_ALL_BOXES,
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1'
    ])
    ckpt = osp.join(work, 'epoch_1.pth')
    return runner, ckpt, work


def test_train_writes_a_weights_only_checkpoint(trained):
    _, ckpt, _ = trained
    assert osp.isfile(ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert 'pts_bbox_head.conv_cls.weight' in state['state_dict']
    assert state['meta']['epoch'] == 1


def test_test_tool_evaluates_with_nuscenes_metric(trained, tiny_synthetic_root,
                                                  tmp_path):
    _, ckpt, _ = trained
    out = tmp_path / 'metrics.json'
    metrics = load_tool('test').main([
        SMALL_PP_CONFIG, ckpt, '--work-dir', str(tmp_path), '--out-json',
        str(out), '--cfg-options', *data_options(tiny_synthetic_root),
        KEEP_ALL_BOXES
    ])
    keys = ' '.join(metrics)
    assert 'NDS' in keys and 'mAP' in keys and 'car_AP_dist_2.0' in keys
    assert out.is_file()


def test_resume_continues_from_checkpoint(trained, tiny_synthetic_root):
    _, ckpt, work = trained
    runner = load_tool('train').main([
        SMALL_PP_CONFIG, '--work-dir', work, '--resume', ckpt,
        '--cfg-options', *data_options(tiny_synthetic_root), KEEP_ALL_BOXES,
        'train_cfg.max_epochs=2',
        'default_hooks.checkpoint.interval=1'
    ])
    assert runner.epoch == 2
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))


def test_test_tool_refuses_other_models_checkpoint(tiny_synthetic_root,
                                                   tmp_path):
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.conv.weight': torch.zeros(1)}},
               str(other))
    with pytest.raises(CheckpointError, match='does not match'):
        load_tool('test').main([
            SMALL_PP_CONFIG, str(other), '--work-dir', str(tmp_path),
            '--cfg-options', *data_options(tiny_synthetic_root)
        ])


def test_tools_name_a_missing_data_root(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        load_tool('train').main([
            SMALL_PP_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
            *data_options(str(tmp_path / 'absent'))
        ])
