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
