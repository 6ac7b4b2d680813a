"""Benchmarks of a detector and its deploy folder.

    python tools/benchmark.py CONFIG CHECKPOINT --deploy_dir DEPLOY --latency \
        [--frame PKL_OR_DIR] [--repeats 20] [--warmup 3] [--threads 1] \
        [--out results/latency.json]

``--latency`` times, on one frame, every stage of the float mmdet3d model in
PyTorch and of the deployed int8 pipeline (numpy glue + ONNX Runtime)
in the same process, on the same points (the frame's info .pkl through the
config's test pipeline, sweeps merged as it does), and prints medians
(p10..p90) per stage, the glue's share of the deployed frame and the
scatter speedup over mmdet3d's PointPillarsScatter
(:mod:`mmdet3d_vitis.deploy.latency`).  The results are written as JSON
(``{"latency": {...}}``; each benchmark mode writes its own key).

    python tools/benchmark.py CONFIG CHECKPOINT --row \
        [--quant_dir Q ...] [--deploy_dir DEPLOY] [--out results/NAME.json] \
        [--plots --plot_dir DIR]

``--row`` writes one model-zoo row (:mod:`mmdet3d_vitis.deploy.zoo`,
rendered by ``tools/zoo_table.py``): input size, parameters, GOPs per DPU
subgraph counted from the traced subgraphs
(:mod:`mmdet3d_vitis.quantization.ops_count`), DPU coverage, float and
int8 accuracy read from each ``--quant_dir``'s ``report.json`` (PTQ, fast
finetune, QAT, as the report says; the float model is evaluated here only
when no report has it), calibration time, with ``--deploy_dir`` the
latency of ``--latency`` and the peak memory of the deployed pipeline, and
the versions and machine.  ``--out`` then holds the row itself.

``--plots`` writes three PNGs to ``--plot_dir``: one test frame in BEV with
ground truth / float / int8 boxes (int8: the first PTQ / fast-finetune
``--quant_dir``), the SQNR of every quantized DPU layer on
``--sqnr_frames`` test frames, and (with ``--deploy_dir``) per-stage
latency against 10k..300k points resampled from ``--frame``.
"""
import argparse
import glob
import os.path as osp
import sys
from typing import Optional, Sequence

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.errors import UserInputError  # noqa: E402

DEFAULT_FRAME = osp.normpath(
    osp.join(REPO, '..', 'shared', 'data', 'nuscenes_demo'))
#: benchmark modes: flag -> function(args, cfg) returning a JSON-able dict
MODES = ('latency', 'row', 'plots')


def _positive(name, minimum=1):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{name} must be an integer')
        if value < minimum:
            raise argparse.ArgumentTypeError(f'{name} must be >= {minimum}')
        return value
    return parse


def parse_args(argv: Optional[Sequence[str]] = None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Benchmark a detector and its deploy folder '
        '(tools/quant.py --dump_xmodel) on a real frame.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='float checkpoint file')
    parser.add_argument(
        '--deploy_dir', '--deploy-dir',
        help='the deploy folder tools/quant.py --quant_mode test '
        '--dump_xmodel wrote for this config')
    modes = parser.add_argument_group('benchmarks (pick at least one)')
    modes.add_argument(
        '--latency', action='store_true',
        help='per-stage latency of the float PyTorch model and of the '
        'deployed int8 pipeline on ONNX Runtime')
    modes.add_argument(
        '--row', action='store_true',
        help='one model-zoo row (JSON, the --out file) for '
        'tools/zoo_table.py')
    modes.add_argument(
        '--plots', action='store_true',
        help='BEV GT/float/int8, per-layer SQNR and latency-vs-points '
        'PNGs in --plot_dir')
    parser.add_argument(
        '--quant_dir', '--quant-dir', action='append', default=[],
        help='a tools/quant.py --quant_mode test folder (its report.json '
        'gives the int8 accuracy); repeat for PTQ / fast finetune / QAT')
    zoo = parser.add_argument_group('row and plots')
    zoo.add_argument('--plot_dir', '--plot-dir',
                     help='folder of the --plots PNGs (default: next to '
                     '--out)')
    zoo.add_argument('--plot_frame', type=_positive('--plot_frame', 0),
                     default=0, help='test-set frame of the BEV picture')
    zoo.add_argument('--score_thr', type=float, default=0.3,
                     help='detections drawn in the BEV picture')
    zoo.add_argument('--sqnr_frames', type=_positive('--sqnr_frames'),
                     default=4, help='test frames the SQNR is taken on')
    zoo.add_argument('--scaling_counts', type=_positive('--scaling_counts'),
                     nargs='+', default=None,
                     help='point counts of the latency-vs-points picture '
                     '(default 10k..300k)')
    zoo.add_argument('--scaling_repeats',
                     type=_positive('--scaling_repeats'), default=5,
                     help='timed runs per count')
    zoo.add_argument('--no_memory', action='store_true',
                     help='skip the peak memory measurement (a fresh '
                     'process per side)')
    frame = parser.add_argument_group('frame')
    frame.add_argument(
        '--frame', default=DEFAULT_FRAME,
        help='the info .pkl of the frame, or a folder holding exactly one '
        '(its data files are looked up next to it); the first frame of it '
        f'is used (default {DEFAULT_FRAME})')
    timing = parser.add_argument_group('latency')
    timing.add_argument('--repeats', type=_positive('--repeats'), default=20,
                        help='timed runs per side (medians over them)')
    timing.add_argument('--warmup', type=_positive('--warmup', 0), default=3,
                        help='untimed runs before them')
    timing.add_argument('--threads', type=_positive('--threads'), default=1,
                        help='torch threads and ONNX Runtime intra-op '
                        'threads')
    parser.add_argument(
        '--out', help='JSON file to write (default work_dirs/<config '
        'name>/benchmark.json)')
    parser.add_argument(
        '--cfg-options', '--cfg_options', nargs='+', action=DictAction,
        help='override config settings')
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------
# inputs


def _frame_pkl(frame: str) -> str:
    if osp.isdir(frame):
        pkls = sorted(glob.glob(osp.join(frame, '*.pkl')))
        if len(pkls) != 1:
            raise UserInputError(
                f'--frame {frame}: expected exactly one info .pkl in the '
                f'folder, found {len(pkls)}')
        return pkls[0]
    if not osp.isfile(frame):
        raise UserInputError(f'--frame {frame}: no such file or folder')
    if not frame.endswith('.pkl'):
        raise UserInputError(f'--frame {frame}: not an info .pkl')
    return frame


def load_frame(cfg, frame: str):
    """The first frame of ``frame``'s info .pkl through the config's test
    pipeline: ``(points (N, F) float32, frame info, metainfo)``."""
    from mmdet3d_vitis.quantization.quant_runner import (build_dataset,
                                                         eval_dataset_cfg)
    pkl = osp.abspath(_frame_pkl(frame))
    root = osp.dirname(pkl)
    ds_cfg = eval_dataset_cfg(cfg)
    while 'dataset' in ds_cfg:  # wrappers (CBGS, Repeat, ...)
        ds_cfg = ds_cfg['dataset']
    ds_cfg.update(data_root=root + '/', ann_file=pkl,
                  data_prefix=dict(pts='', img='', sweeps=''))
    ds_cfg.pop('indices', None)
    try:
        dataset = build_dataset(ds_cfg)
        if len(dataset) < 1:
            raise UserInputError(f'--frame {pkl}: the info .pkl holds no '
                                 'frame')
        sample = dataset[0]
    except (FileNotFoundError, KeyError) as e:
        raise UserInputError(
            f'--frame {pkl}: cannot load the frame through the config\'s '
            f'test pipeline ({type(e).__name__}: {e})') from e
    points = sample['inputs']['points']
    points = points.numpy() if hasattr(points, 'numpy') else np.asarray(
        points)
    info = dataset.get_data_info(0)
    lidar = info.get('lidar_points', {}).get('lidar_path', '')
    meta = sample['data_samples'].metainfo
    return (np.ascontiguousarray(points, np.float32),
            dict(pkl=pkl, path=lidar, sample_idx=info.get('sample_idx'),
                 token=info.get('token'),
                 num_sweeps=len(info.get('lidar_sweeps', []) or [])),
            dict(meta))


def _close(a, b) -> bool:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=1e-6))


def check_deploy_matches(cfg, detector, manifest: dict, num_features: int,
                         deploy_dir: str) -> None:
    """UserInputError unless the deploy folder was built from this config
    (classes, voxelization, BEV grid, point width)."""
    problems = []
    names = list(cfg.get('class_names') or cfg.test_dataloader.dataset.get(
        'metainfo', {}).get('classes') or [])
    if names and list(manifest['model']['class_names']) != names:
        problems.append(f'class names {manifest["model"]["class_names"]} '
                        f'vs the config\'s {names}')
    layer = detector.data_preprocessor.voxel_layer
    vox = manifest['voxelization']
    if not _close(vox['voxel_size'], layer.voxel_size):
        problems.append(f'voxel_size {vox["voxel_size"]} vs '
                        f'{list(layer.voxel_size)}')
    if not _close(vox['point_cloud_range'], layer.point_cloud_range):
        problems.append(f'point_cloud_range {vox["point_cloud_range"]} vs '
                        f'{list(layer.point_cloud_range)}')
    if int(vox['max_num_points']) != int(layer.max_num_points):
        problems.append(f'max_num_points {vox["max_num_points"]} vs '
                        f'{layer.max_num_points}')
    max_voxels = layer.max_voxels
    test_max = int(max_voxels[1] if isinstance(max_voxels, (tuple, list))
                   else max_voxels)
    if int(vox['max_voxels']) != test_max:
        problems.append(f'max_voxels {vox["max_voxels"]} vs {test_max}')
    middle = getattr(detector, 'pts_middle_encoder', None) or getattr(
        detector, 'middle_encoder', None)
    shape = getattr(middle, 'output_shape', None)
    if shape is not None and [int(v) for v in shape] != [
            int(v) for v in manifest['scatter']['grid_hw']]:
        problems.append(f'BEV grid {manifest["scatter"]["grid_hw"]} vs '
                        f'{list(shape)}')
    if int(manifest['points']['num_features']) != num_features:
        problems.append(
            f'{manifest["points"]["num_features"]} point features vs '
            f'{num_features} from the config\'s test pipeline')
    if problems:
        raise UserInputError(
            f'--deploy_dir {deploy_dir} was not built from this config: ' +
            '; '.join(problems))


# ---------------------------------------------------------------------------
# modes


def run_latency(args, cfg) -> dict:
    """``--latency``: both sides on the frame; prints the table."""
    from mmdet3d_vitis.deploy import Pipeline
    from mmdet3d_vitis.deploy.latency import (format_latency_table,
                                              latency_report)
    from mmdet3d_vitis.quantization.quant_runner import load_float_detector
    if not args.deploy_dir:
        raise UserInputError('--latency needs --deploy_dir (the folder '
                             'tools/quant.py --dump_xmodel wrote)')
    if not osp.isdir(args.deploy_dir):
        raise UserInputError(f'--deploy_dir {args.deploy_dir}: no such '
                             'folder')
    points, frame, meta = load_frame(cfg, args.frame)
    detector = load_float_detector(cfg, args.checkpoint)
    pipeline = Pipeline(args.deploy_dir, num_threads=args.threads)
    check_deploy_matches(cfg, detector, pipeline.manifest, points.shape[1],
                         args.deploy_dir)
    report = latency_report(detector, pipeline, points, frame,
                            repeats=args.repeats, warmup=args.warmup,
                            threads=args.threads, metainfo=meta)
    report.update(config=osp.abspath(args.config),
                  checkpoint=osp.abspath(args.checkpoint),
                  deploy_dir=osp.abspath(args.deploy_dir))
    print(format_latency_table(report), flush=True)
    return report


def run_row(args, cfg) -> dict:
    """``--row``: one model-zoo row (see :mod:`mmdet3d_vitis.deploy.zoo`)."""
    from mmdet3d_vitis.deploy.zoo_row import build_row
    return build_row(args, cfg, REPO, run_latency, load_frame)


def run_plots(args, cfg) -> dict:
    """``--plots``: the three PNGs (see module doc)."""
    from mmdet3d_vitis.deploy.zoo_row import make_plots
    return make_plots(args, cfg, load_frame)


RUNNERS = dict(latency=run_latency, row=run_row, plots=run_plots)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    chosen = [m for m in MODES if getattr(args, m)]
    if not chosen:
        raise UserInputError('pick a benchmark: ' +
                             ', '.join(f'--{m}' for m in MODES))
    if not osp.isfile(args.checkpoint):
        raise UserInputError(f'checkpoint not found: {args.checkpoint}')
    from mmengine.registry import init_default_scope

    import mmdet3d_vitis  # noqa: F401  (registers the plugin)
    from mmdet3d_vitis.config_utils import load_config
    from mmdet3d_vitis.fileio import atomic_write_json
    cfg = load_config(args.config, args.cfg_options, check_data=False)
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    for q in args.quant_dir:
        if not osp.isfile(osp.join(q, 'report.json')):
            raise UserInputError(
                f'--quant_dir {q}: no report.json (run tools/quant.py '
                '--quant_mode test there first)')
    if args.plots and not args.quant_dir:
        raise UserInputError('--plots needs a --quant_dir (the int8 model '
                             'of the BEV and SQNR pictures)')
    out = args.out or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0],
        'benchmark.json')
    if args.plots and not args.plot_dir:
        args.plot_dir = osp.dirname(osp.abspath(out))
    if args.row and args.latency:
        chosen.remove('latency')  # the row holds it
    results = {m: RUNNERS[m](args, cfg) for m in chosen}
    # --row: the file is the row itself (tools/zoo_table.py reads it)
    atomic_write_json(out, results['row'] if args.row else results)
    print(f'wrote {out}')
    return results


if __name__ == '__main__':
    run_cli(main)
