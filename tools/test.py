"""Evaluate a checkpoint with the config's test loop and evaluator.

A quantization-aware training checkpoint (written by ``DPUQATHook``) is
evaluated as the int8 fake-quant model it holds, with the QAT config or
the float one.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]
                         [--out-json metrics.json] [--cfg-options ...]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdet3d_vitis  # noqa: F401,E402  (registers components)
from mmdet3d_vitis.checkpoint import (check_checkpoint_matches,  # noqa: E402
                                      load_checkpoint_file)
from mmdet3d_vitis.hooks import ensure_qat_hook  # noqa: E402
from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.config_utils import load_config  # noqa: E402
from mmdet3d_vitis.report import (atomic_write_json, format_summary,  # noqa
                                  summarize_nuscenes_metrics)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a 3D detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='dir for logs and results')
    parser.add_argument('--out-json',
                        help='write the metrics (raw and summary) here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=1')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, splits=('test', ))
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    # A quantization-aware training checkpoint: the DPUQATHook rebuilds the
    # int8 model when mmengine loads it (and checks its keys), so the
    # fake-quant model is what is evaluated.
    qat = ensure_qat_hook(cfg, load_checkpoint_file(args.checkpoint))
    runner = (Runner.from_cfg(cfg) if 'runner_type' not in cfg else
              RUNNERS.build(cfg))
    if not qat:
        # mmengine only warns about missing keys; refuse another model's.
        check_checkpoint_matches(runner.model, args.checkpoint)
    metrics = runner.test()
    summary = summarize_nuscenes_metrics(metrics)
    if summary.get('per_class_AP'):
        print(format_summary(summary, f'== {osp.basename(args.config)}'))
    else:  # e.g. the segmenter's mIoU metric
        print(f'== {osp.basename(args.config)}')
        print('\n'.join(f'{k:<28s} {v:.4f}' for k, v in metrics.items()
                        if isinstance(v, (int, float))))
    if args.out_json:
        atomic_write_json(args.out_json,
                          dict(metrics=metrics, summary=summary,
                               config=args.config,
                               checkpoint=args.checkpoint))
    return metrics


if __name__ == '__main__':
    run_cli(main)
