"""Run a deploy folder on one point-cloud file and print the detections.

    python tools/infer.py DEPLOY_DIR POINTS.bin [--load-dim N]
        [--use-dim 0 1 2 3 4 | --use-dim 4] [--score-thr 0.1]
        [--bev-png out.png] [--num-threads N] [--drop-invalid]

``POINTS.bin`` is a flat float32 file of ``load_dim`` columns per point
(nuScenes ``.pcd.bin``: 5 = x, y, z, intensity, ring; KITTI ``.bin``: 4);
``--load-dim`` defaults to the deploy folder's ``points.load_dim`` (else
its ``num_features``).  ``--use-dim`` keeps the listed columns (or the first
N); default: the test pipeline's ``LoadPointsFromFile.use_dim`` recorded in
``pipeline.json`` when the file has its ``load_dim``, else the first
``num_features``.  The frame goes through
``mmdet3d_vitis.deploy.Pipeline`` (numpy glue + the int8 ONNX subgraphs);
the table lists class, score and the LiDAR box ``x y z l w h yaw`` (bottom
centre, ``l w h`` = ``dx dy dz``), then the time of each stage.

A deploy folder made from a multi-sweep config expects the points the test
pipeline produces: sweeps merged, column 4 the time lag, which
``LoadPointsFromMultiSweeps`` sets to 0 on the key frame.  A single file
holds only the key frame, so column 4 is set to 0 there as well (the
nuScenes ring index would be there otherwise); ``--keep-col4`` keeps it.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

import numpy as np  # noqa: E402

from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.deploy import Pipeline, PointCloudError  # noqa: E402
from mmdet3d_vitis.errors import UserInputError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect 3D boxes in one point-cloud file with a deploy '
        'folder (tools/quant.py --dump_xmodel)')
    parser.add_argument('deploy_dir', help='the deploy folder')
    parser.add_argument('points', help='float32 .bin point file')
    parser.add_argument(
        '--load-dim', '--load_dim', dest='load_dim', type=int, default=None,
        help='float32 values per point in the file (default: the deploy '
        "folder's points.load_dim, else num_features)")
    parser.add_argument(
        '--use-dim', '--use_dim', dest='use_dim', type=int, nargs='+',
        default=None,
        help='columns to keep (several indices), or one number N: the first '
        'N columns (default: the first num_features)')
    parser.add_argument(
        '--score-thr', '--score_thr', dest='score_thr', type=float,
        default=0.0, help='print / draw only detections scoring >= this')
    parser.add_argument('--bev-png', '--bev_png', dest='bev_png',
                        help='write a bird\'s-eye-view PNG here')
    parser.add_argument('--num-threads', '--num_threads', dest='num_threads',
                        type=int, default=None,
                        help='ONNX Runtime intra-op threads')
    parser.add_argument('--keep-col4', '--keep_col4', dest='keep_col4',
                        action='store_true',
                        help='multi-sweep deploy folders: keep column 4 as '
                        'read instead of the key frame\'s time lag 0')
    parser.add_argument('--drop-invalid', '--drop_invalid',
                        dest='drop_invalid', action='store_true',
                        help='drop points with NaN / inf instead of failing')
    return parser.parse_args(argv)


def read_points(path: str, load_dim: int) -> np.ndarray:
    """``(N, load_dim)`` float32 points of a flat float32 file."""
    if load_dim is None or load_dim < 1:
        raise UserInputError(f'--load-dim must be >= 1, got {load_dim!r}')
    if not osp.isfile(path):
        raise PointCloudError(f'point file not found: {path}')
    size = os.path.getsize(path)
    row = 4 * load_dim
    if size % row:
        raise PointCloudError(
            f'{path}: {size} bytes is not a multiple of {row} (load_dim='
            f'{load_dim} float32 values per point); nuScenes .pcd.bin files '
            f'have 5 values per point, KITTI .bin files 4: set --load-dim')
    return np.fromfile(path, dtype=np.float32).reshape(-1, load_dim)


def select_columns(points: np.ndarray, use_dim, num_features: int
                   ) -> np.ndarray:
    load_dim = points.shape[1]
    if use_dim is None:
        use_dim = [num_features]
    if len(use_dim) == 1:
        cols = list(range(use_dim[0]))
    else:
        cols = list(use_dim)
    if not cols or any(c < 0 or c >= load_dim for c in cols):
        raise UserInputError(
            f'--use-dim {use_dim} selects columns outside the {load_dim} '
            f'the file has (--load-dim {load_dim})')
    if len(cols) != num_features:
        raise UserInputError(
            f'--use-dim {use_dim} keeps {len(cols)} columns, the deploy '
            f'folder expects {num_features} features per point')
    return np.ascontiguousarray(points[:, cols])


def format_detections(result: dict, class_names) -> str:
    header = (f'{"#":>3s}  {"class":<22s} {"score":>6s} {"x":>8s} {"y":>8s} '
              f'{"z":>7s} {"l":>6s} {"w":>6s} {"h":>6s} {"yaw":>7s}')
    lines = [header]
    order = np.argsort(-result['scores'], kind='stable')
    for rank, i in enumerate(order):
        b = result['bboxes'][i]
        label = int(result['labels'][i])
        name = (class_names[label] if 0 <= label < len(class_names) else
                f'class {label}')
        lines.append(
            f'{rank:>3d}  {name:<22s} {result["scores"][i]:6.3f} '
            f'{b[0]:8.2f} {b[1]:8.2f} {b[2]:7.2f} {b[3]:6.2f} {b[4]:6.2f} '
            f'{b[5]:6.2f} {b[6]:7.3f}')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.num_threads is not None and args.num_threads < 1:
        raise UserInputError('--num-threads must be >= 1')
    pipeline = Pipeline(args.deploy_dir, num_threads=args.num_threads,
                        drop_invalid=args.drop_invalid)
    load_dim = args.load_dim
    if load_dim is None:
        load_dim = (pipeline.manifest.get('points', {}).get('load_dim')
                    or pipeline.num_features)
    raw = read_points(args.points, int(load_dim))
    use_dim = args.use_dim
    meta = pipeline.manifest.get('points', {})
    if use_dim is None and meta.get('use_dim') is not None and meta.get(
            'load_dim') == raw.shape[1]:
        use_dim = meta['use_dim']
        use_dim = [use_dim] if isinstance(use_dim, int) else list(use_dim)
    points = select_columns(raw, use_dim, pipeline.num_features)
    if (meta.get('sweeps_num') is not None and points.shape[1] >= 5
            and not args.keep_col4):
        points[:, 4] = 0.0  # the key frame's time lag
    result = pipeline(points)
    keep = result['scores'] >= args.score_thr
    result = {k: v[keep] for k, v in result.items()}
    print(f'{args.points}: {points.shape[0]} points, '
          f'{result["scores"].shape[0]} detections '
          f'(score >= {args.score_thr:g})')
    print(format_detections(result, pipeline.class_names))
    times = dict(pipeline.stage_times)
    total = sum(times.values())
    print('stage times (ms): ' + ', '.join(
        f'{k} {v * 1e3:.1f}' for k, v in times.items()) +
        f'; total {total * 1e3:.1f}')
    if args.bev_png:
        from mmdet3d_vitis.deploy.bev_plot import plot_bev
        plot_bev(points, result['bboxes'], result['labels'], args.bev_png,
                 title=f'{osp.basename(args.points)}: '
                 f'{result["scores"].shape[0]} detections',
                 class_names=pipeline.class_names,
                 point_cloud_range=pipeline.point_cloud_range)
        print(f'BEV picture: {args.bev_png}')
    return dict(result, num_points=int(points.shape[0]),
                stage_times=times, class_names=list(pipeline.class_names),
                bev_png=args.bev_png)


if __name__ == '__main__':
    run_cli(main)
