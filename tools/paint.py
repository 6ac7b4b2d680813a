"""Paint a whole dataset offline with a trained 2D segmenter.

    python tools/paint.py CONFIG --seg-checkpoint SEG.pth --out-dir OUT
        [--seg-config configs/pointpainting/semantic-fpn_r18_synthetic-cams.py]
        [--splits train val] [--mode scores|onehot] [--cfg-options ...]

CONFIG is a painted detector config (its ``painting`` dict says which
cameras, painted classes, class map and whether unseen points are kept);
the painting source becomes the segmenter.  For every sample of each
split's info pkl the key frame's points are loaded as the config loads
them, painted, and written as float32 ``OUT/samples/LIDAR_TOP/<name>``
(width = loaded dims + painted classes); ``OUT/<info pkl>`` is the info
with ``lidar_points.lidar_path`` / ``num_pts_feats`` pointing at them.
Files are written atomically and existing ones skipped, so an interrupted
run resumes.  A config on the painted data loads ``OUT`` with
``load_dim = use_dim = num_pts_feats`` and no painting transform.
"""
import argparse
import copy
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
from mmengine import ProgressBar, dump, load  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import mmdet3d_vitis  # noqa: F401,E402  (registers components)
from mmdet3d.registry import DATASETS  # noqa: E402
from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.config_utils import (check_data_paths,  # noqa: E402
                                        load_config)
from mmdet3d_vitis.errors import UserInputError  # noqa: E402
from mmdet3d_vitis.fileio import atomic_write  # noqa: E402

DEFAULT_SEG_CONFIG = 'configs/pointpainting/semantic-fpn_r18_synthetic-cams.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='painted detector config')
    parser.add_argument('--seg-checkpoint', required=True)
    parser.add_argument('--seg-config', default=DEFAULT_SEG_CONFIG)
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        choices=['train', 'val', 'test'])
    parser.add_argument('--mode', choices=['scores', 'onehot'],
                        help='default: the config painting dict\'s mode')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def _painting(cfg, args) -> dict:
    painting = cfg.get('painting')
    if not isinstance(painting, dict) or \
            painting.get('type') != 'VitisPointPainting':
        raise UserInputError(
            f'{args.config} has no `painting = dict(type='
            "'VitisPointPainting', ...)`: use a painted detector config")
    painting = dict(copy.deepcopy(painting), source='segmenter',
                    segmenter=dict(config=args.seg_config,
                                   checkpoint=args.seg_checkpoint),
                    append_scores=True)
    painting.pop('mask_root', None)
    if args.mode:
        painting['mode'] = args.mode
    return painting


def paint_split(cfg, split: str, painting: dict, out_dir: str) -> dict:
    loader = cfg.get(f'{split}_dataloader')
    if loader is None:
        raise UserInputError(f'the config has no {split}_dataloader')
    ds_cfg = copy.deepcopy(loader.dataset)
    while 'dataset' in ds_cfg:  # dataset wrappers
        ds_cfg = ds_cfg.dataset
    load_points = dict(cfg.load_points) if 'load_points' in cfg else dict(
        type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5,
        use_dim=4)
    ds_cfg.update(pipeline=[load_points, painting], test_mode=True)
    dataset = DATASETS.build(ds_cfg)
    ann_file = ds_cfg.ann_file
    if not osp.isabs(ann_file):
        ann_file = osp.join(ds_cfg.get('data_root', ''), ann_file)
    infos = load(ann_file)
    if len(infos['data_list']) != len(dataset):
        raise UserInputError(
            f'{ann_file}: {len(infos["data_list"])} infos but the dataset '
            f'has {len(dataset)} samples (a load_interval or filter?)')
    lidar_dir = osp.join(out_dir, 'samples', 'LIDAR_TOP')
    os.makedirs(lidar_dir, exist_ok=True)
    written = skipped = 0
    use_dim = load_points.get('use_dim', load_points.get('load_dim', 4))
    width = (use_dim if isinstance(use_dim, int) else len(use_dim)) + int(
        painting['num_classes'])
    bar = ProgressBar(len(dataset))
    for i in range(len(dataset)):
        info = infos['data_list'][i]
        name = osp.basename(info['lidar_points']['lidar_path'])
        path = osp.join(lidar_dir, name)
        if osp.isfile(path):  # written (atomically) by an earlier run
            skipped += 1
        else:
            points = dataset[i]['points'].tensor.numpy().astype(np.float32)
            if points.shape[1] != width:
                raise UserInputError(
                    f'{name}: painted points have {points.shape[1]} dims, '
                    f'expected {width}')
            atomic_write(path, lambda f, p=points: f.write(p.tobytes()))
            written += 1
        info['lidar_points']['lidar_path'] = name
        info['lidar_points']['num_pts_feats'] = width
        info['lidar_points']['painted'] = True
        bar.update()
    sys.stdout.write('\n')
    out_pkl = osp.join(out_dir, osp.basename(ann_file))
    atomic_write(out_pkl, lambda f: dump(infos, f, file_format='pkl'))
    return dict(split=split, info=out_pkl, samples=len(dataset),
                written=written, skipped=skipped, num_pts_feats=width)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.seg_checkpoint):
        raise UserInputError(
            f'segmenter checkpoint not found: {args.seg_checkpoint}')
    # the datasets must exist; the evaluators are not used here
    cfg = load_config(args.config, args.cfg_options, check_data=False)
    check_data_paths(cfg, tuple(args.splits), evaluators=False)
    painting = _painting(cfg, args)
    results = [paint_split(cfg, split, painting, args.out_dir)
               for split in args.splits]
    for r in results:
        print(f'{r["split"]}: {r["samples"]} samples ({r["written"]} '
              f'painted, {r["skipped"]} already there), '
              f'{r["num_pts_feats"]} dims -> {r["info"]}')
    return results


if __name__ == '__main__':
    run_cli(main)
