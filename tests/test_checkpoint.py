"""mmengine checkpoints load weights-only; other weights are refused."""
import io
import os
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmdet3d_vitis  # noqa: F401  (registers the safe globals)
from mmdet3d.registry import MODELS
from mmdet3d_vitis.checkpoint import (CheckpointError,
                                      check_checkpoint_matches,
                                      load_checkpoint_file)

from conftest import SMALL_PP_CONFIG, ZOO_PP_CONFIG


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class _ToyData(torch.utils.data.Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)))


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('toy_run'))
    runner = Runner(
        model=_ToyModel(), work_dir=work_dir, default_scope='mmdet3d',
        train_dataloader=dict(
            dataset=_ToyData(), batch_size=2,
            sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1)))
    runner.train()
    return os.path.join(work_dir, 'epoch_1.pth')


def test_runner_checkpoint_loads_weights_only(runner_checkpoint):
    # Plain torch.load is what mmengine's load_checkpoint / resume call.
    ckpt = torch.load(runner_checkpoint, weights_only=True)
    assert 'linear.weight' in ckpt['state_dict']
    history = ckpt['message_hub']['log_scalars']['train/loss']
    assert len(history.data[0]) > 0 and history.mean() >= 0


class _RunsCommand:

    def __reduce__(self):
        return (os.system, ('echo pwned', ))


class _ReachesGlobals:
    """getattr is allowed for HistoryBuffer's statistics methods only."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize('payload', [_RunsCommand(), _ReachesGlobals()])
def test_arbitrary_pickles_still_refused(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    buf = io.BytesIO()
    torch.save({'state_dict': {}, 'x': payload}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(path), weights_only=True)
    with pytest.raises(CheckpointError, match='cannot load checkpoint'):
        load_checkpoint_file(str(path))


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nope'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    small = MODELS.build(Config.fromfile(SMALL_PP_CONFIG).model)
    mirror = MODELS.build(Config.fromfile(ZOO_PP_CONFIG).model)
    path = str(tmp_path / 'small.pth')
    torch.save({'state_dict': small.state_dict(),
                'meta': {'experiment_name': 'small_pp'}}, path)
    check_checkpoint_matches(small, path)  # its own model: accepted
    with pytest.raises(CheckpointError) as err:
        check_checkpoint_matches(mirror, path)
    message = str(err.value)
    assert 'does not match' in message and 'small_pp' in message
    assert 'shape mismatch' in message
    assert 'pts_backbone.blocks.0.0.weight' in message or 'missing' in message
