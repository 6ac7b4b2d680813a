"""tools/quant.py end to end on the tiny synthetic set, with random weights.

Nothing is trained: the small PointPillars config's model is built with a
fixed seed and saved as the float checkpoint.  Calibration runs on a few
train frames with the builtin (brevitas) backend; the metrics of a random
model are tiny, so only their presence is checked, and int8 vs float is
compared on the raw head maps instead.
"""
import json
import os
import os.path as osp

import pytest
import torch
from mmengine.dataset import pseudo_collate

import mmdet3d_vitis  # noqa: F401  (registers the plugin)
from mmdet3d_vitis.checkpoint import CheckpointError
from mmdet3d_vitis.config_utils import ConfigError
from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.quantization import UnsupportedModelError
from mmdet3d_vitis.quantization.backends import (BackendUnavailableError,
                                                 QuantStateError, get_backend,
                                                 nndct_import_error)
from mmdet3d_vitis.quantization import quant_runner
from mmdet3d_vitis.quantization.quant_runner import (
    build_dataset, head_outputs, load_float_detector,
    load_quant_config, quantize_model, select_indices, eval_dataset_cfg)

from conftest import (SMALL_PP_CONFIG, data_options,
                      quant_test_options, save_random_small_checkpoint)

CALIB_LEN = 4


@pytest.fixture(scope='module')
def options(tiny_synthetic_root):
    return quant_test_options(tiny_synthetic_root)


@pytest.fixture(scope='module')
def random_checkpoint(tmp_path_factory):
    return save_random_small_checkpoint(
        str(tmp_path_factory.mktemp('ckpt') / 'random.pth'))


@pytest.fixture(scope='module')
def calibrated(quant_tool, random_checkpoint, options, tmp_path_factory):
    quant_dir = str(tmp_path_factory.mktemp('quant') / 'quantize_result')
    info = quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'calib',
        '--calib_len', str(CALIB_LEN), '--calib_sample_method', 'sequential',
        '--quant_dir', quant_dir, '--backend', 'builtin', '--cfg-options',
        *options
    ])
    return quant_dir, info


@pytest.fixture(scope='module')
def tested(quant_tool, calibrated, random_checkpoint, options,
           tmp_path_factory):
    quant_dir, _ = calibrated
    work = str(tmp_path_factory.mktemp('work'))
    report = quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--quant-mode', 'test',
        '--quant-dir', quant_dir, '--backend', 'builtin', '--work-dir', work,
        '--cfg-options', *options
    ])
    return quant_dir, report


@pytest.fixture(scope='module')
def int8_model(quant_tool, calibrated, random_checkpoint, options):
    """The config, and the detector quantized from the calibrated state."""
    quant_dir, _ = calibrated
    opts = _opts(quant_tool, random_checkpoint, options,
                 '--quant_mode', 'test')
    cfg = load_quant_config(opts)
    detector = load_float_detector(cfg, random_checkpoint)
    backend = get_backend('builtin', quant_mode='test', output_dir=quant_dir)
    return cfg, quantize_model(detector, backend, pillar_input_range=_calib(
        quant_dir)['pillar_input_range'])


def _calib(quant_dir):
    with open(osp.join(quant_dir, 'calib.json')) as f:
        return json.load(f)


def _opts(quant_tool, ckpt, options, *flags):
    return quant_tool.options_from_args(quant_tool.parse_args(
        [SMALL_PP_CONFIG, ckpt, *flags, '--cfg-options', *options]))


def _listing(path):
    if not osp.exists(path):
        return None
    return sorted((name, os.stat(osp.join(path, name)).st_mtime_ns)
                  for name in os.listdir(path))


# ---------------------------------------------------------------------------
# calib / test / float
# ---------------------------------------------------------------------------
def test_calib_writes_quant_info_for_every_quantized_tensor(
        calibrated, int8_model, random_checkpoint):
    quant_dir, info = calibrated
    with open(osp.join(quant_dir, 'quant_info.json')) as f:
        quant_info = json.load(f)
    entries = {**quant_info['param'], **quant_info['output']}
    for key, value in entries.items():
        bits, pos = value
        assert bits == 8 and isinstance(pos, int), key
    # The test-mode backend rebuilds every quantized tensor of every
    # subgraph from the float model: each must have its entry.
    _, qmodel = int8_model
    assert list(qmodel.qmods) == ['pillar_encoder', 'bev']
    tensors = set()
    for name, qmod in qmodel.qmods.items():
        own = set(qmod.tensors)
        assert own and all(k.startswith(f'{name}::') for k in own)
        n_convs = sum(
            isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
            for m in qmodel.float_subgraphs[name].modules())
        assert sum(k in quant_info['param'] for k in own) == 2 * n_convs
        tensors |= own
    assert tensors == set(entries)

    with open(osp.join(quant_dir, 'calib.json')) as f:
        calib = json.load(f)
    assert calib == info
    assert calib['indices'] == list(range(CALIB_LEN))
    assert calib['calib_len'] == CALIB_LEN
    assert calib['calib_sample_method'] == 'sequential'
    assert calib['backend'] == 'builtin' and calib['fast_finetune'] is False
    assert calib['dataset']['split'] == 'train'
    assert calib['checkpoint'] == random_checkpoint
    assert calib['seconds'] > 0
    # no staging folder left behind
    parent = osp.dirname(quant_dir)
    assert os.listdir(parent) == [osp.basename(quant_dir)]


def test_test_mode_reports_float_and_int8(tested, calibrated, capsys):
    quant_dir, report = tested
    with open(osp.join(quant_dir, 'report.json')) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(report))
    for which in ('float', 'int8'):
        assert {'mAP', 'NDS', 'per_class_AP'} <= set(report[which])
        assert len(report[which]['per_class_AP']) == 10
    assert report['delta']['mAP'] == pytest.approx(
        report['int8']['mAP'] - report['float']['mAP'])
    assert set(report['delta']['per_class_AP']) == set(
        report['float']['per_class_AP'])
    assert report['backend'] == 'builtin'
    assert report['fast_finetune'] is False
    assert report['calib']['indices'] == calibrated[1]['indices']
    assert report['settings']['quant_mode'] == 'test'


def test_int8_head_maps_differ_from_float_but_are_close(int8_model):
    cfg, qmodel = int8_model
    batch = pseudo_collate([build_dataset(eval_dataset_cfg(cfg))[0]])
    try:
        float_maps = head_outputs(qmodel.use('float').model, batch)
    finally:
        qmodel.use('quant')
    int8_maps = head_outputs(qmodel.model, batch)
    for f_level, q_level in zip(float_maps, int8_maps):
        for ref, out in zip(f_level, q_level):
            assert not torch.equal(ref, out)
            ref, out = ref.double(), out.double()
            sqnr = 10 * torch.log10(ref.pow(2).sum() /
                                    (ref - out).pow(2).sum())
            assert sqnr > 15, sqnr


def test_float_mode_equals_the_float_original(
        quant_tool, tested, random_checkpoint, options, tmp_path):
    _, report = tested
    quant_dir = str(tmp_path / 'float_only')
    out = quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'float',
        '--quant_dir', quant_dir, '--backend', 'builtin', '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *options
    ])
    assert out['float_partitioned']['mAP'] == pytest.approx(
        report['float']['mAP'], abs=1e-6)
    assert out['float_partitioned']['NDS'] == pytest.approx(
        report['float']['NDS'], abs=1e-6)
    assert os.listdir(quant_dir) == ['float.json']


def test_fast_finetune_random_subset(quant_tool, random_checkpoint, options,
                                     tmp_path):
    quant_dir = str(tmp_path / 'fft')
    info = quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--calib-len', '2',
        '--calib-sample-method', 'random', '--seed', '3', '--fast-finetune',
        '--fft-len', '1', '--quant-dir', quant_dir, '--backend', 'builtin',
        '--cfg-options', *options
    ])
    num_frames = info['dataset']['num_frames']
    assert info['indices'] == select_indices(num_frames, 2, 'random', 3)
    assert info['fft_indices'] == select_indices(num_frames, 1, 'random', 3)
    assert set(info['fft_indices']) <= set(info['indices'])
    with open(osp.join(quant_dir, 'quant_info.json')) as f:
        assert json.load(f)['fast_finetuned'] is True
    # test mode finds the fast-finetuned state
    backend = get_backend('builtin', quant_mode='test', output_dir=quant_dir)
    opts = _opts(quant_tool, random_checkpoint, options,
                 '--quant_mode', 'test')
    detector = load_float_detector(load_quant_config(opts), random_checkpoint)
    qmodel = quantize_model(detector, backend, pillar_input_range=_calib(
        quant_dir)['pillar_input_range'])
    for name, qmod in qmodel.qmods.items():
        backend.fast_finetune(name, qmod, [])


def test_fast_finetune_test_without_fft_calib_is_refused(
        quant_tool, calibrated, random_checkpoint, options):
    quant_dir, _ = calibrated
    before = _listing(quant_dir)
    with pytest.raises(QuantStateError, match='without fast finetune'):
        quant_tool.main([
            SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'test',
            '--fast_finetune', '--quant_dir', quant_dir, '--backend',
            'builtin', '--cfg-options', *options
        ])
    assert _listing(quant_dir) == before


def test_inspect_prints_the_dpu_table(quant_tool, random_checkpoint, options,
                                      tmp_path, capsys):
    quant_dir = str(tmp_path / 'inspect')
    out = quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--inspect', '--quant_dir',
        quant_dir, '--cfg-options', *options
    ])
    printed = capsys.readouterr().out
    assert 'DPU subgraph pillar_encoder' in printed
    assert 'DPU subgraph bev' in printed
    assert f"({100 * out['dpu_share']:.2f}%)" in printed
    assert out['dpu_share'] > 0.9
    assert os.listdir(quant_dir) == ['inspect.json']


# ---------------------------------------------------------------------------
# bad input: a clear error and nothing written
# ---------------------------------------------------------------------------
def test_test_before_calib_is_refused_and_writes_nothing(
        quant_tool, random_checkpoint, options, tmp_path):
    quant_dir = tmp_path / 'empty'
    quant_dir.mkdir()
    with pytest.raises(QuantStateError,
                       match=r'calib first \(with the same --quant_dir'):
        quant_tool.main([
            SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'test',
            '--quant_dir', str(quant_dir), '--backend', 'builtin',
            '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options
        ])
    assert os.listdir(quant_dir) == []
    assert not (tmp_path / 'work').exists()


def test_other_models_checkpoint_is_refused(quant_tool, calibrated, options,
                                            tmp_path):
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.conv.weight': torch.zeros(1)}},
               str(other))
    quant_dir, _ = calibrated
    before = _listing(quant_dir)
    for mode in ('calib', 'test'):
        with pytest.raises(CheckpointError, match='does not match'):
            quant_tool.main([
                SMALL_PP_CONFIG, str(other), '--quant_mode', mode,
                '--quant_dir', quant_dir, '--backend', 'builtin',
                '--cfg-options', *options
            ])
    assert _listing(quant_dir) == before
    with pytest.raises(CheckpointError, match='not found'):
        quant_tool.main([
            SMALL_PP_CONFIG, str(tmp_path / 'absent.pth'), '--quant_dir',
            str(tmp_path / 'q'), '--cfg-options', *options
        ])
    assert sorted(os.listdir(tmp_path)) == ['other.pth']


def test_failed_calibration_leaves_quant_dir_as_it_was(
        quant_tool, calibrated, random_checkpoint, options, monkeypatch):
    quant_dir, _ = calibrated
    before = _listing(quant_dir)
    parent = osp.dirname(quant_dir)
    siblings = sorted(os.listdir(parent))

    def broken(*args, **kwargs):
        raise RuntimeError('calibration failed')

    monkeypatch.setattr(quant_runner, 'calibrate', broken)
    with pytest.raises(RuntimeError, match='calibration failed'):
        quant_tool.main([
            SMALL_PP_CONFIG, random_checkpoint, '--calib_len', '1',
            '--quant_dir', quant_dir, '--backend', 'builtin',
            '--cfg-options', *options
        ])
    assert _listing(quant_dir) == before
    assert sorted(os.listdir(parent)) == siblings  # staging removed


@pytest.mark.skipif(nndct_import_error() is None,
                    reason='pytorch_nndct is installed')
def test_nndct_backend_unavailable(quant_tool, random_checkpoint, options,
                                   tmp_path):
    quant_dir = tmp_path / 'q'
    with pytest.raises(BackendUnavailableError, match='--backend builtin'):
        quant_tool.main([
            SMALL_PP_CONFIG, random_checkpoint, '--backend', 'nndct',
            '--calib_len', '1', '--quant_dir', str(quant_dir),
            '--cfg-options', *options
        ])
    assert os.listdir(tmp_path) == []


def test_unsupported_detector_is_named(quant_tool, tiny_synthetic_root,
                                       tmp_path):
    config = tmp_path / 'centerpoint.py'
    config.write_text(
        "_base_ = ['mmdet3d::centerpoint/centerpoint_pillar02_second_secfpn"
        "_8xb4-cyclic-20e_nus-3d.py']\n"
        "custom_imports = dict(imports=['mmdet3d_vitis'], "
        "allow_failed_imports=False)\n")
    quant_dir = tmp_path / 'q'
    with pytest.raises(UnsupportedModelError, match='CenterPoint'):
        quant_tool.main([
            str(config), str(tmp_path / 'centerpoint.pth'), '--quant_mode',
            'test', '--quant_dir', str(quant_dir), '--cfg-options',
            *data_options(tiny_synthetic_root)
        ])
    assert not quant_dir.exists()


def test_config_without_plugin_import(quant_tool, tmp_path,
                                      random_checkpoint):
    config = tmp_path / 'stock.py'
    config.write_text(
        "_base_ = ['mmdet3d::pointpillars/pointpillars_hv_secfpn_sbn-all_"
        "8xb4-2x_nus-3d.py']\n")
    with pytest.raises(ConfigError, match='does not import'):
        quant_tool.main([str(config), random_checkpoint, '--quant_dir',
                         str(tmp_path / 'q')])
    assert sorted(os.listdir(tmp_path)) == ['stock.py']


@pytest.mark.parametrize('flag', ['--dump_xmodel', '--dump-xmodel',
                                  '--deploy'])
def test_dump_xmodel_outside_test_mode_is_refused_before_any_work(
        quant_tool, tmp_path, flag):
    # --dump_xmodel is implemented for --quant_mode test with the builtin
    # backend (tests/test_deploy_pipeline.py); elsewhere it is refused
    with pytest.raises(UserInputError,
                       match='--dump_xmodel needs --quant_mode test'):
        # neither file exists: the refusal comes first
        quant_tool.main([str(tmp_path / 'no_config.py'),
                         str(tmp_path / 'no.pth'), flag, '--quant_dir',
                         str(tmp_path / 'q')])
    assert os.listdir(tmp_path) == []


def test_dump_xmodel_with_nndct_is_refused_before_any_work(
        quant_tool, tmp_path):
    """Without pytorch_nndct (or, inside the Vitis AI docker, without XIR)
    the nndct xmodel export is refused before anything is read or
    written."""
    try:
        import pytorch_nndct  # noqa: F401
        import xir  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip('pytorch_nndct and XIR import: the export can run')
    with pytest.raises(UserInputError, match='pytorch_nndct|XIR'):
        quant_tool.main([str(tmp_path / 'no_config.py'),
                         str(tmp_path / 'no.pth'), '--quant_mode', 'test',
                         '--dump_xmodel', '--backend', 'nndct',
                         '--quant_dir', str(tmp_path / 'q')])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('value', [['--calib_len', '0'], ['--fft-len', '-1'],
                                   ['--bitwidth', '1']])
def test_bad_values_are_refused(quant_tool, tmp_path, value):
    with pytest.raises(UserInputError):
        quant_tool.main([str(tmp_path / 'c.py'), str(tmp_path / 'c.pth')] +
                        value)


# ---------------------------------------------------------------------------
# command line and sampling
# ---------------------------------------------------------------------------
def test_dashed_and_underscore_flags_parse_alike(quant_tool):
    tail = ['cfg.py', 'ckpt.pth']
    underscore = quant_tool.parse_args(tail + [
        '--quant_mode', 'test', '--calib_len', '7', '--calib_sample_method',
        'sequential', '--quant_dir', 'qd', '--fast_finetune', '--fft_len',
        '5', '--dump_xmodel', '--work_dir', 'wd', '--cfg_options', 'a.b=1'
    ])
    dashed = quant_tool.parse_args(tail + [
        '--quant-mode', 'test', '--calib-len', '7', '--calib-sample-method',
        'sequential', '--quant-dir', 'qd', '--fast-finetune', '--fft-len',
        '5', '--deploy', '--work-dir', 'wd', '--cfg-options', 'a.b=1'
    ])
    assert vars(underscore) == vars(dashed)
    assert underscore.calib_len == 7 and underscore.dump_xmodel
    assert underscore.cfg_options == {'a.b': 1}
    defaults = quant_tool.parse_args(tail)
    assert (defaults.quant_mode, defaults.calib_len,
            defaults.calib_sample_method, defaults.seed, defaults.quant_dir,
            defaults.bitwidth, defaults.fast_finetune, defaults.fft_len,
            defaults.backend, defaults.dump_xmodel, defaults.inspect) == (
                'calib', 500, 'random', 0, 'quantize_result', 8, False, 300,
                'auto', False, False)
    with pytest.raises(SystemExit):
        quant_tool.parse_args(tail + ['--quant_mode', 'deploy'])


def test_random_sampling_is_seeded():
    a = select_indices(100, 10, 'random', seed=0)
    assert a == select_indices(100, 10, 'random', seed=0)
    assert a != select_indices(100, 10, 'random', seed=1)
    assert a != list(range(10)) and len(set(a)) == 10
    assert set(select_indices(100, 4, 'random', 0)) <= set(a)
    assert select_indices(100, 10, 'sequential') == list(range(10))
    assert select_indices(5, 500, 'random', 0) == list(range(5))  # capped
    with pytest.raises(UserInputError):
        select_indices(5, 2, 'stratified')
