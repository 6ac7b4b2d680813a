"""Evaluate a deploy folder (ONNX Runtime, no mmdet3d model) on a config's
test split with the config's test evaluator.

    python tools/deploy_test.py DEPLOY_DIR CONFIG [--work-dir DIR]
        [--max-frames N] [--out-json metrics.json] [--num-threads N]
        [--cfg-options key=value ...]

``DEPLOY_DIR`` is what ``tools/quant.py --quant_mode test --dump_xmodel``
wrote; ``CONFIG`` the config it was quantized with (its classes and point
width must match ``pipeline.json``).  Every test frame goes through
``mmdet3d_vitis.deploy.Pipeline`` as the test pipeline hands it to the
detector (sweeps merged); the metric files land in ``--work-dir`` (default
``work_dirs/deploy_test_<config name>``).  ``--max-frames`` runs the first N
frames only and submits the others empty (a smoke test: the metrics are a
lower bound).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from mmengine.config import DictAction  # noqa: E402

import mmdet3d_vitis  # noqa: F401,E402  (registers components)
from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.config_utils import load_config  # noqa: E402
from mmdet3d_vitis.deploy import Pipeline  # noqa: E402
from mmdet3d_vitis.deploy.evaluate import (  # noqa: E402
    check_pipeline_config, evaluate_pipeline)
from mmdet3d_vitis.errors import UserInputError  # noqa: E402
from mmdet3d_vitis.fileio import atomic_write_json  # noqa: E402
from mmdet3d_vitis.report import (format_summary,  # noqa: E402
                                  summarize_nuscenes_metrics)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Evaluate a deploy folder on the config\'s test split')
    parser.add_argument('deploy_dir', help='the deploy folder')
    parser.add_argument('config', help='the config it was quantized with')
    parser.add_argument('--work-dir', '--work_dir', dest='work_dir',
                        help='where the metric files go')
    parser.add_argument('--max-frames', '--max_frames', dest='max_frames',
                        type=int, default=None,
                        help='run only the first N test frames')
    parser.add_argument('--out-json', '--out_json', dest='out_json',
                        help='write the metrics (raw and summary) here')
    parser.add_argument('--num-threads', '--num_threads', dest='num_threads',
                        type=int, default=None,
                        help='ONNX Runtime intra-op threads')
    parser.add_argument(
        '--cfg-options', '--cfg_options', dest='cfg_options', nargs='+',
        action=DictAction,
        help='override config settings, e.g. '
        'test_dataloader.dataset.data_root=data/nuscenes/')
    return parser.parse_args(argv)


def main(argv=None):
    from mmengine.registry import init_default_scope
    args = parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        raise UserInputError('--max-frames must be >= 1')
    if args.num_threads is not None and args.num_threads < 1:
        raise UserInputError('--num-threads must be >= 1')
    cfg = load_config(args.config, args.cfg_options, splits=('test', ))
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    pipeline = Pipeline(args.deploy_dir, num_threads=args.num_threads)
    check_pipeline_config(pipeline, cfg)  # before building the dataset
    work_dir = args.work_dir or osp.join(
        './work_dirs',
        'deploy_test_' + osp.splitext(osp.basename(args.config))[0])
    result = evaluate_pipeline(pipeline, cfg, work_dir=work_dir,
                               max_frames=args.max_frames)
    summary = summarize_nuscenes_metrics(result['metrics'])
    result['summary'] = summary
    print(format_summary(
        summary, f'== deploy {osp.abspath(args.deploy_dir)} on '
        f'{osp.basename(args.config)} ({result["num_frames"]} of '
        f'{result["total_frames"]} frames)'))
    print(f'{result["seconds_per_frame"] * 1e3:.1f} ms per frame '
          f'(Pipeline: ' + ', '.join(
              f'{k} {v * 1e3:.1f}'
              for k, v in result['stage_seconds'].items()) + ')')
    if args.out_json:
        atomic_write_json(args.out_json, dict(
            result, deploy_dir=osp.abspath(args.deploy_dir),
            config=args.config))
    return result


if __name__ == '__main__':
    run_cli(main)
