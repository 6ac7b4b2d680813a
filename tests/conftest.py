"""Shared fixtures: repo paths and the read-only data in ../shared/data."""
import importlib.util
import os.path as osp
import warnings

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_DATA = osp.join(REPO, '..', 'shared', 'data')
NUSCENES_DEMO = osp.join(SHARED_DATA, 'nuscenes_demo')
ZOO_PP_CONFIG = osp.join(
    REPO, 'configs/pointpillars/pointpillars_zoo-40000x64_secfpn_nus-3d.py')
SMALL_PP_CONFIG = osp.join(
    REPO, 'configs/pointpillars/pointpillars_small_secfpn_synthetic-nus-3d.py')


def load_tool(name):
    """``tools/<name>.py`` as a module (its ``main(argv)`` runs in-process)."""
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_options(root):
    """``--cfg-options`` pointing a config's data at ``root``, no workers."""
    from mmdet3d_vitis.config_utils import data_root_options
    return data_root_options(root) + [
        f'{split}_dataloader.{key}'
        for split in ('train', 'val', 'test')
        for key in ('num_workers=0', 'persistent_workers=False')
    ]


def pytest_configure(config):
    # mmengine imports pkg_resources on every import; not our concern.
    config.addinivalue_line('filterwarnings',
                            'ignore:pkg_resources is deprecated')
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')


@pytest.fixture(scope='session')
def nuscenes_demo_dir():
    if not osp.isdir(NUSCENES_DEMO):
        pytest.skip(f'shared nuScenes frame not found at {NUSCENES_DEMO}')
    return NUSCENES_DEMO


@pytest.fixture(scope='session')
def tiny_synthetic_root(tmp_path_factory):
    """10 synthetic scenes x 2 key frames, through mmdet3d's converter."""
    from mmdet3d_vitis.datasets.synthetic_nuscenes import generate
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate(root, scenes=10, frames=2, seed=0, workers=2)
    return root


@pytest.fixture(autouse=True)
def mmdet3d_default_scope():
    """Build from mmdet3d's registries whatever scope an earlier Runner set."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield


def quant_test_options(root):
    """data_options plus few NMS candidates: random weights score every
    anchor alike."""
    return data_options(root) + [
        'model.test_cfg.pts.nms_pre=100', 'model.test_cfg.pts.max_num=50'
    ]


def save_random_small_checkpoint(path, spread_cls_scores=False):
    """A seeded random-init checkpoint of the small PointPillars config.

    ``spread_cls_scores``: mmdet3d's init gives every anchor almost the same
    logit, so int8 scores tie in large groups and top-k / NMS picks among
    equal scores differ between implementations; wider classification
    weights spread the scores out.
    """
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmdet3d_vitis  # noqa: F401
    from mmdet3d.registry import MODELS
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(SMALL_PP_CONFIG).model)
    if spread_cls_scores:
        head = model.pts_bbox_head
        torch.nn.init.normal_(head.conv_cls.weight, std=0.2)
        torch.nn.init.zeros_(head.conv_cls.bias)
    torch.save({'state_dict': model.state_dict(),
                'meta': {'experiment_name': 'random_init_small_pp'}}, path)
    return path


def randomize_bn(module, seed=0):
    """Non-trivial BN statistics and affine parameters, eval mode."""
    import torch
    from torch import nn
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean = torch.randn(n, generator=g) * 0.2
            m.running_var = torch.rand(n, generator=g) + 0.5
    return module.eval()


@pytest.fixture(scope='module')
def quant_tool():
    """tools/quant.py as a module (its ``main(argv)`` runs in-process)."""
    return load_tool('quant')


def second_block(ci, co, stride):
    """A SECOND backbone stage: two 3x3 conv + BN + ReLU."""
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(ci, co, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(co, eps=1e-3), nn.ReLU(inplace=True),
        nn.Conv2d(co, co, 3, padding=1, bias=False),
        nn.BatchNorm2d(co, eps=1e-3), nn.ReLU(inplace=True))


def calibrate_builtin(out_dir, name, module, inputs, fast_finetune=False):
    """Calibrate ``module`` with the builtin backend on ``inputs`` (a list
    of argument tuples) and export; returns (backend, wrapped module)."""
    import torch
    from mmdet3d_vitis.quantization.backends import get_backend
    backend = get_backend('builtin', quant_mode='calib',
                          output_dir=str(out_dir))
    qmod = backend.wrap(name, module, inputs[0])
    if fast_finetune:
        backend.fast_finetune(name, qmod, inputs)
    with torch.no_grad():
        for args in inputs:
            qmod(*args)
    backend.export_quant_config()
    return backend, qmod


def make_deploy_folder(checkpoint, options, root, check_frames=0,
                       calib_len=4):
    """Calibrate ``checkpoint`` (``calib_len`` frames, builtin backend) and
    ``--dump_xmodel`` into ``root`` with ``check_frames`` deploy-check
    frames; ``(quant_dir, deploy_dir, test-mode report, checkpoint,
    options)``."""
    quant_tool = load_tool('quant')
    root = str(root)
    quant_dir = osp.join(root, 'quantize_result')
    common = ['--quant_dir', quant_dir, '--backend', 'builtin']
    quant_tool.main([
        SMALL_PP_CONFIG, checkpoint, '--quant_mode', 'calib', '--calib_len',
        str(calib_len), '--calib_sample_method', 'sequential', *common,
        '--cfg-options', *options
    ])
    report = quant_tool.main([
        SMALL_PP_CONFIG, checkpoint, '--quant_mode', 'test', '--dump_xmodel',
        '--deploy_check_frames', str(check_frames), *common, '--work-dir',
        osp.join(root, 'work'), '--cfg-options', *options
    ])
    return (quant_dir, osp.join(quant_dir, 'deploy'), report, checkpoint,
            options)


@pytest.fixture(scope='session')
def shared_deploy(tiny_synthetic_root, tmp_path_factory):
    """One random-weight deploy folder per test session (deploy check off:
    tests/test_deploy_check.py covers it): ``(quant_dir, deploy_dir,
    report, checkpoint, options)``."""
    checkpoint = save_random_small_checkpoint(
        str(tmp_path_factory.mktemp('ckpt') / 'random.pth'),
        spread_cls_scores=True)
    return make_deploy_folder(checkpoint,
                              quant_test_options(tiny_synthetic_root),
                              tmp_path_factory.mktemp('deploy'))
