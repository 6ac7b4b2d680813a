"""Train a detector with mmengine's Runner, the plugin imported.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]]
                                 [--cfg-options key=value ...]

Quantization-aware training: a config with ``custom_hooks =
[dict(type='DPUQATHook', ...)]`` and ``load_from`` a float checkpoint (e.g.
configs/pointpillars/pointpillars_small_secfpn_synthetic-nus-3d_qat.py);
``--resume`` continues a QAT run from its checkpoint without recalibrating.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdet3d_vitis  # noqa: F401,E402  (registers components)
from mmdet3d_vitis.checkpoint import load_checkpoint_file  # noqa: E402
from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.config_utils import load_config  # noqa: E402
from mmdet3d_vitis.hooks import ensure_qat_hook  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a 3D detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='dir for logs and checkpoints')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or from the latest checkpoint in the work '
        'dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. train_cfg.max_epochs=2')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, splits=('train', 'val'))
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    if cfg.get('load_from'):
        # fail now, not after setup; a QAT checkpoint needs its hook
        ensure_qat_hook(cfg, load_checkpoint_file(cfg.load_from))
    runner = (Runner.from_cfg(cfg) if 'runner_type' not in cfg else
              RUNNERS.build(cfg))
    runner.train()
    return runner


if __name__ == '__main__':
    run_cli(main)
