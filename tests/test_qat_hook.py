"""Quantization-aware training through DPUQATHook on the tiny synthetic set.

One short QAT run (random float weights, one epoch of a few iterations)
is shared by the tests: the hook's quantized model, its training, the
freezing of the fix positions, the checkpoint's quantization state, the
resume, tools/test.py and tools/quant.py --dump_xmodel on the QAT
checkpoint, and the refusals.
"""
import json
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmdet3d.registry import HOOKS
from mmengine.hooks import Hook
from torch import nn

from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.hooks import (QAT_KEY, DPUQATHook, load_qat_checkpoint,
                                 run_qat)
from mmdet3d_vitis.quantization.backends import (BackendUnavailableError,
                                                 nndct_import_error)
from mmdet3d_vitis.quantization.backends.graph import QuantSubgraph
from mmdet3d_vitis.quantization.partition import (PILLAR_ENCODER,
                                                  UnsupportedModelError)
from mmdet3d_vitis.quantization.partitioned_detector import \
    VitisPartitionedDetector

from conftest import (REPO, SMALL_PP_CONFIG, load_tool, quant_test_options,
                      save_random_small_checkpoint)

QAT_CONFIG = osp.join(
    REPO,
    'configs/pointpillars/pointpillars_small_secfpn_synthetic-nus-3d_qat.py')
KEEP_ALL_BOXES = 'model.test_cfg.pts.score_thr=0.0'
FREEZE_AFTER = 2


def qat_options(root, ckpt=None, epochs=1):
    opts = quant_test_options(root) + [
        KEEP_ALL_BOXES, f'train_cfg.max_epochs={epochs}',
        f'train_cfg.val_interval={epochs}', 'train_dataloader.batch_size=2',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1',
        'custom_hooks.0.calib_len=4', 'custom_hooks.0.backend=builtin',
        f'custom_hooks.0.freeze_observers_after={FREEZE_AFTER}',
        # a larger lr than the real QAT: the weights must visibly move
        'optim_wrapper.optimizer.lr=0.001'
    ]
    if ckpt is not None:
        opts.append(f'load_from={ckpt}')
    return opts


def parse_options(options):
    """``--cfg-options`` strings -> the dict DictAction makes."""
    import argparse

    from mmengine.config import DictAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    return parser.parse_args(['--o'] + list(options)).o


def load_cfg(path, options, splits):
    from mmdet3d_vitis.config_utils import load_config
    return load_config(path, parse_options(options), splits=splits)


def fix_positions(model):
    return {
        name: dict(model.get_subgraph(name).fix_positions())
        for name in model.subgraph_names
    }


@HOOKS.register_module(name='_QATTestProbe', force=True)
class Probe(Hook):
    """Records what the QAT run does (runs after DPUQATHook)."""

    priority = 'LOWEST'
    instances = []

    def __init__(self):
        Probe.instances.append(self)
        self.runner = None
        self.losses, self.positions, self.val_models = [], [], []
        self.start_params = None
        self.optim_params = None

    def before_train(self, runner):
        self.runner = runner
        model = runner.model
        self.start_params = {
            k: v.detach().clone()
            for k, v in model.named_parameters() if 'subgraphs' in k}
        self.optim_params = [
            p for g in runner.optim_wrapper.optimizer.param_groups
            for p in g['params']]

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(float(sum(v.detach() for k, v in outputs.items()
                                     if 'loss' in k)))
        self.positions.append(fix_positions(runner.model))

    def before_val_epoch(self, runner):
        model = runner.model
        self.val_models.append((type(model), [
            (type(model.get_subgraph(n)),
             [s.collecting for s in model.get_subgraph(n).scalers().values()])
            for n in model.subgraph_names]))


@pytest.fixture(scope='module')
def float_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp('float') / 'float.pth'
    return save_random_small_checkpoint(str(path), spread_cls_scores=True)


@pytest.fixture(scope='module')
def qat_run(tiny_synthetic_root, float_ckpt, tmp_path_factory):
    """One QAT epoch through run_qat (what ``make demo`` calls)."""
    work = str(tmp_path_factory.mktemp('qat'))
    options = qat_options(tiny_synthetic_root, float_ckpt)
    cfg_options = parse_options(
        [o for o in options
         if not o.startswith(('custom_hooks.', 'load_from='))])
    cfg_options['custom_hooks'] = [
        dict(type='DPUQATHook', backend='builtin', calib_len=4,
             freeze_observers_after=FREEZE_AFTER),
        dict(type='_QATTestProbe')
    ]
    Probe.instances.clear()
    ckpt = run_qat(QAT_CONFIG, float_ckpt, work, max_epochs=1,
                   cfg_options=cfg_options)
    probe = Probe.instances[-1]
    runner = probe.runner
    hook = next(h for h in runner._hooks if isinstance(h, DPUQATHook))
    assert ckpt == osp.join(work, 'epoch_1.pth')
    return SimpleNamespace(runner=runner, hook=hook, probe=probe, work=work,
                           ckpt=ckpt, options=options)


def test_hook_quantizes_and_trains(qat_run):
    model, probe = qat_run.runner.model, qat_run.probe
    assert isinstance(model, VitisPartitionedDetector)
    assert model.subgraph_names == [PILLAR_ENCODER, 'bev']
    qmods = [model.get_subgraph(n) for n in model.subgraph_names]
    assert all(isinstance(q, QuantSubgraph) for q in qmods)
    # the optimizer trains exactly the quantized subgraphs' weights
    own = {id(p) for q in qmods for p in q.parameters()}
    assert {id(p) for p in probe.optim_params} == own
    assert len(probe.losses) > FREEZE_AFTER + 1
    assert all(np.isfinite(probe.losses))
    end = dict(model.named_parameters())
    moved = [k for k, v in probe.start_params.items()
             if not torch.equal(v, end[k].detach())]
    assert len(moved) > len(probe.start_params) // 2


def test_fix_positions_freeze_after_schedule(qat_run):
    positions, hook = qat_run.probe.positions, qat_run.hook
    assert hook.frozen
    frozen = positions[FREEZE_AFTER - 1]
    assert all(p == frozen for p in positions[FREEZE_AFTER:])
    for name, pos in frozen.items():
        assert all(v is not None for v in pos.values()), name
    # the frozen positions respect the DPU shifter limits
    for q in qat_run.hook.qmodel.qmods.values():
        before = q.fix_positions()
        assert q.adjust_shifts() == [] and q.fix_positions() == before


def test_validation_runs_the_int8_model(qat_run):
    assert qat_run.probe.val_models
    for model_type, subgraphs in qat_run.probe.val_models:
        assert model_type is VitisPartitionedDetector
        for sub_type, collecting in subgraphs:
            assert sub_type is QuantSubgraph and not any(collecting)


def test_checkpoint_holds_quant_state(qat_run):
    ckpt = torch.load(qat_run.ckpt, weights_only=True)
    state = ckpt[QAT_KEY]
    assert state['backend'] == 'builtin' and state['frozen']
    assert state['subgraphs'] == [PILLAR_ENCODER, 'bev']
    channels = qat_run.runner.model.partition.decoration.out_channels
    assert len(state['pillar_input_range']) == channels == 11
    assert state['calib']['calib_len'] == 4
    model = qat_run.runner.model
    keys = [k for k in ckpt['state_dict'] if k.endswith('fix_pos')]
    assert keys
    own = model.state_dict()
    for k in keys:
        assert torch.isfinite(ckpt['state_dict'][k])
        assert torch.equal(ckpt['state_dict'][k], own[k])


def test_resume_restores_without_recalibration(qat_run, tiny_synthetic_root,
                                               tmp_path, monkeypatch):
    def no_calib(*args, **kwargs):
        raise AssertionError('recalibrated on resume')

    monkeypatch.setattr(DPUQATHook, '_calibrate', no_calib)
    ckpt = torch.load(qat_run.ckpt, weights_only=True)
    runner = load_tool('train').main([
        QAT_CONFIG, '--work-dir', str(tmp_path), '--resume', qat_run.ckpt,
        '--cfg-options', *qat_run.options[:-1], 'train_cfg.max_epochs=2'
    ])
    assert runner.epoch == 2
    model = runner.model
    assert isinstance(model, VitisPartitionedDetector)
    # frozen before the checkpoint: the positions are the checkpoint's
    own = model.state_dict()
    for k, v in ckpt['state_dict'].items():
        if k.endswith('fix_pos'):
            assert torch.equal(own[k], v), k
    # the optimizer state was resumed into the rebuilt parameters
    optimizer = runner.optim_wrapper.optimizer
    steps = {int(s['step']) for s in optimizer.state.values()}
    saved = {int(s['step']) for s in ckpt['optimizer']['state'].values()}
    per_epoch = len(qat_run.probe.losses)
    assert saved == {per_epoch} and steps == {2 * per_epoch}
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_2.pth'))


@pytest.mark.parametrize('config', [SMALL_PP_CONFIG, QAT_CONFIG],
                         ids=['float_config', 'qat_config'])
def test_test_tool_evaluates_the_int8_model(qat_run, tiny_synthetic_root,
                                            tmp_path, monkeypatch, config):
    calls = []
    predict = VitisPartitionedDetector.predict

    def counting(self, *args, **kwargs):
        calls.append(all(isinstance(self.get_subgraph(n), QuantSubgraph)
                         for n in self.subgraph_names))
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(VitisPartitionedDetector, 'predict', counting)
    # with the float config tools/test.py adds the hook itself
    metrics = load_tool('test').main([
        config, qat_run.ckpt, '--work-dir', str(tmp_path),
        '--cfg-options', *quant_test_options(tiny_synthetic_root),
        KEEP_ALL_BOXES
    ])
    assert calls and all(calls)
    assert any('NDS' in k for k in metrics)


def test_quant_tool_exports_qat_checkpoint(qat_run, tiny_synthetic_root,
                                           tmp_path, monkeypatch):
    from mmdet3d_vitis.quantization import quant_runner
    from mmdet3d_vitis.quantization.backends.onnx_export import deploy_check

    def no_calib(*args, **kwargs):
        raise AssertionError('calibrated a QAT checkpoint')

    monkeypatch.setattr(quant_runner, 'calibrate', no_calib)
    monkeypatch.setattr(DPUQATHook, '_calibrate', no_calib)
    quant_dir = tmp_path / 'quant'
    options = quant_test_options(tiny_synthetic_root) + [KEEP_ALL_BOXES]
    report = load_tool('quant').main([
        QAT_CONFIG, qat_run.ckpt, '--quant_mode', 'test', '--dump_xmodel',
        '--quant_dir', str(quant_dir), '--work-dir', str(tmp_path / 'work'),
        '--cfg-options', *options
    ])
    deploy_dir = quant_dir / 'deploy'
    assert report['deploy_dir'] == str(deploy_dir)
    assert report['int8'] is not None and report['float'] is not None
    assert report['qat']['frozen']
    # tools/quant.py's deploy check: ONNX subgraphs within the LSB bounds
    # and the deployed Pipeline's detections = the QAT model's in PyTorch
    if 'deploy_check' in report:
        check = report['deploy_check']
        assert check is not None and check['ok'], check
        assert check['detections_matched']
    manifest = json.loads((deploy_dir / 'pipeline.json').read_text())
    # the exported subgraphs compute what the QAT model computes
    cfg = load_cfg(QAT_CONFIG, options, ('test', ))
    qmodel = load_qat_checkpoint(cfg, qat_run.ckpt)
    model = qmodel.model
    for name in model.subgraph_names:
        a = dict(model.get_subgraph(name).fix_positions())
        b = dict(qat_run.runner.model.get_subgraph(name).fix_positions())
        assert a == b
    inputs = {}
    hooks = [
        model.get_subgraph(n).register_forward_pre_hook(
            lambda m, args, n=n: inputs.setdefault(n, args[0].detach()))
        for n in model.subgraph_names
    ]
    dataset = quant_runner.build_dataset(quant_runner.eval_dataset_cfg(cfg))
    quant_runner.head_outputs(model, quant_runner._batch(dataset, 0))
    for h in hooks:
        h.remove()
    num_voxels = manifest['decoration']['num_voxels']
    x = inputs[PILLAR_ENCODER]
    inputs[PILLAR_ENCODER] = nn.functional.pad(
        x, (0, 0, 0, num_voxels - x.shape[2]))
    for sub in manifest['subgraphs']:
        name = sub['name']
        scales = [o['scale'] for o in sub['outputs']]
        check = deploy_check(model.get_subgraph(name),
                             str(deploy_dir / sub['file']),
                             (inputs[name], ), scales)
        worst = max(c['max_abs_lsb'] for c in check['vs_dpu'])
        assert worst <= 1.0, (name, check['vs_dpu'])


def test_quant_tool_refuses_to_calibrate_a_qat_checkpoint(
        qat_run, tiny_synthetic_root, tmp_path):
    with pytest.raises(UserInputError, match='quantization-aware'):
        load_tool('quant').main([
            QAT_CONFIG, qat_run.ckpt, '--quant_mode', 'calib',
            '--quant_dir', str(tmp_path / 'q'), '--cfg-options',
            *quant_test_options(tiny_synthetic_root)
        ])


def test_qat_checkpoint_of_another_model_is_refused(qat_run,
                                                    tiny_synthetic_root,
                                                    tmp_path):
    from mmdet3d_vitis.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='does not match the quantized'):
        load_tool('test').main([
            SMALL_PP_CONFIG, qat_run.ckpt, '--work-dir', str(tmp_path),
            '--cfg-options', *quant_test_options(tiny_synthetic_root),
            'model.pts_bbox_head.feat_channels=96',
            'model.pts_bbox_head.in_channels=96',
            'model.pts_neck.out_channels=[32,32,32]'
        ])


def test_partitioned_loss_matches_the_detector(tiny_synthetic_root,
                                               float_ckpt):
    """Float partition, eval-mode BN: the partition's loss is the
    detector's own."""
    from mmdet3d.registry import MODELS
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import load_checkpoint

    from mmdet3d_vitis.quantization import quant_runner
    cfg = load_cfg(SMALL_PP_CONFIG, quant_test_options(tiny_synthetic_root),
                   ('train', ))
    detector = MODELS.build(cfg.model)
    load_checkpoint(detector, float_ckpt, map_location='cpu',
                    logger='silent')
    detector.eval()
    dataset = quant_runner.build_dataset(cfg.train_dataloader.dataset)
    batch = pseudo_collate([dataset[0], dataset[1]])
    data = detector.data_preprocessor(batch, True)
    torch.manual_seed(0)
    ref = detector.loss(data['inputs'], data['data_samples'])
    model = VitisPartitionedDetector(detector).eval()
    out = model.loss(data['inputs'], data['data_samples'])
    assert set(out) == set(ref)
    for k in ref:
        a = torch.stack([torch.as_tensor(v) for v in ref[k]]).sum() \
            if isinstance(ref[k], list) else ref[k]
        b = torch.stack([torch.as_tensor(v) for v in out[k]]).sum() \
            if isinstance(out[k], list) else out[k]
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------
def test_hook_refuses_a_model_without_dpu_part():
    hook = DPUQATHook(backend='builtin')
    with pytest.raises(UnsupportedModelError, match='DPUQATHook'):
        hook.before_run(SimpleNamespace(model=nn.Linear(2, 2)))


@pytest.mark.skipif(nndct_import_error() is None,
                    reason='pytorch_nndct is installed here')
def test_hook_refuses_unavailable_backend():
    with pytest.raises(BackendUnavailableError, match='pytorch_nndct'):
        DPUQATHook(backend='nndct')


@pytest.mark.parametrize('kwargs,match', [
    (dict(freeze_bn_after=10), 'freeze_bn_after'),
    (dict(freeze_observers_after=-1), 'freeze_observers_after'),
    (dict(calib_len=0), 'calib_len'),
])
def test_hook_refuses_bad_settings(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        DPUQATHook(backend='builtin', **kwargs)


@pytest.mark.skipif(nndct_import_error() is not None,
                    reason='pytorch_nndct (Vitis AI docker) is not installed')
def test_nndct_qat_processor_wraps_a_subgraph(tmp_path):
    from mmdet3d_vitis.quantization.backends import get_backend
    backend = get_backend('nndct', quant_mode='calib',
                          output_dir=str(tmp_path))
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                           nn.ReLU()).eval()
    trainable = backend.qat_wrap('bev', module, (torch.randn(1, 3, 8, 8), ))
    out = trainable(torch.randn(2, 3, 8, 8))
    out.float().sum().backward()
    assert any(p.grad is not None for p in trainable.parameters())


def test_resume_before_the_freeze_keeps_observing(tiny_synthetic_root,
                                                  float_ckpt, tmp_path,
                                                  monkeypatch):
    """A checkpoint saved while the fix positions still follow the data:
    shift-legal positions and the activation histories are saved, and a
    resumed run continues those histories (no recalibration)."""
    options = [o for o in qat_options(tiny_synthetic_root, float_ckpt)
               if 'freeze_observers_after' not in o] + [
                   'custom_hooks.0.freeze_observers_after=1000']
    work = str(tmp_path)
    collecting = []
    predict = VitisPartitionedDetector.predict

    def recording(self, *args, **kwargs):
        collecting.extend(
            s.collecting for n in self.subgraph_names
            for s in self.get_subgraph(n).scalers().values())
        return predict(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(VitisPartitionedDetector, 'predict', recording)
        load_tool('train').main([QAT_CONFIG, '--work-dir', work,
                                 '--cfg-options', *options])
    # validation in between ran on fixed (not collecting) positions
    assert collecting and not any(collecting)
    ckpt_path = osp.join(work, 'epoch_1.pth')
    ckpt = torch.load(ckpt_path, weights_only=True)
    state = ckpt[QAT_KEY]
    assert not state['frozen']
    lengths = {(n, k): len(h) for n, hs in state['histories'].items()
               for k, h in hs.items()}
    assert lengths and min(lengths.values()) > 4  # calibration + training
    qmodel_cfg = load_cfg(QAT_CONFIG, quant_test_options(tiny_synthetic_root),
                          ('test', ))
    qmodel = load_qat_checkpoint(qmodel_cfg, ckpt_path)
    for qmod in qmodel.qmods.values():  # saved with the DPU shift limits
        before = qmod.fix_positions()
        assert qmod.adjust_shifts() == [] and qmod.fix_positions() == before

    def no_calib(*args, **kwargs):
        raise AssertionError('recalibrated on resume')

    monkeypatch.setattr(DPUQATHook, '_calibrate', no_calib)
    runner = load_tool('train').main([
        QAT_CONFIG, '--work-dir', work, '--resume', ckpt_path,
        '--cfg-options', *[o for o in options if not o.startswith(
            'load_from=')], 'train_cfg.max_epochs=2'
    ])
    hook = next(h for h in runner._hooks if isinstance(h, DPUQATHook))
    assert hook.restored and not hook.frozen
    for name in runner.model.subgraph_names:
        scalers = runner.model.get_subgraph(name).scalers()
        for key, scaler in scalers.items():
            if (name, key) in lengths:
                assert len(scaler.history) > lengths[(name, key)]
