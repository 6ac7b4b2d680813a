"""Config loading with the checks a user needs before a long run starts."""
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from .errors import UserInputError

PLUGIN = 'mmdet3d_vitis'
PLUGIN_IMPORT_HINT = (
    "custom_imports = dict(imports=['mmdet3d_vitis'], "
    'allow_failed_imports=False)')


class ConfigError(UserInputError):
    """The config is missing, lacks the plugin import, or points nowhere."""


def load_config(path: str,
                cfg_options: Optional[dict] = None,
                check_data: bool = True,
                splits: Sequence[str] = ('train', 'val', 'test')) -> Config:
    """``Config.fromfile`` plus the plugin-import and data-path checks."""
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    check_plugin_import(cfg, path)
    if check_data:
        check_data_paths(cfg, splits)
    return cfg


def check_plugin_import(cfg: Config, path: str = 'config') -> None:
    """Configs must import the plugin themselves.

    The tools import it anyway, but the same config used with stock mmdet3d
    tools (or ``mim train``) would fail later with an unrelated-looking
    "not in the registry" error; naming the cause here saves that hunt.
    """
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    if not any(i == PLUGIN or i.startswith(PLUGIN + '.') for i in imports):
        raise ConfigError(
            f'{path} does not import the {PLUGIN} plugin; add\n  '
            f'{PLUGIN_IMPORT_HINT}\nso its registered modules are found.')


def _datasets(cfg: Config, splits: Sequence[str]
              ) -> Iterator[Tuple[str, ConfigDict]]:
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        dataset = loader.get('dataset')
        # Unwrap RepeatDataset / CBGSDataset / ConcatDataset-like wrappers.
        while isinstance(dataset, dict) and 'dataset' in dataset:
            dataset = dataset['dataset']
        if isinstance(dataset, dict):
            yield split, dataset


def check_data_paths(cfg: Config,
                     splits: Sequence[str] = ('train', 'val', 'test'),
                     evaluators: bool = True) -> None:
    """Every dataset's ``data_root`` and ``ann_file`` must exist (and, with
    ``evaluators``, every evaluator's ``ann_file``)."""
    for split, dataset in _datasets(cfg, splits):
        root = dataset.get('data_root') or ''
        if root and not osp.isdir(root):
            raise ConfigError(
                f'{split} data root {root!r} does not exist. Generate the '
                f'synthetic set with `python tools/create_synthetic_nuscenes'
                f'.py --out {root}` or set data_root to your nuScenes copy '
                f'(--cfg-options {split}_dataloader.dataset.data_root=...).')
        ann = dataset.get('ann_file')
        if ann:
            ann_path = ann if osp.isabs(ann) else osp.join(root, ann)
            if not osp.isfile(ann_path):
                raise ConfigError(
                    f'{split} annotation file {ann_path!r} does not exist '
                    f'(data root {root!r}); create the info pkls with '
                    f"mmdet3d's create_data.py or "
                    f'tools/create_synthetic_nuscenes.py.')
    for split in splits if evaluators else ():
        evaluator = cfg.get(f'{split}_evaluator')
        for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
            ann = ev.get('ann_file') if isinstance(ev, dict) else None
            if ann and not osp.isfile(ann):
                raise ConfigError(
                    f'{split}_evaluator.ann_file {ann!r} does not exist')


def data_root_options(root: str) -> List[str]:
    """``--cfg-options`` that point a nuScenes-style config at ``root``:
    every dataloader's ``data_root`` and the evaluators' info pkl."""
    root = root.rstrip('/') + '/'
    options = [f'{split}_dataloader.dataset.data_root={root}'
               for split in ('train', 'val', 'test')]
    for split in ('val', 'test'):
        options += [f'{split}_evaluator.data_root={root}',
                    f'{split}_evaluator.ann_file={root}nuscenes_infos_val.pkl']
    return options
