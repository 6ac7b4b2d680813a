"""Generate the deterministic synthetic nuScenes-format dataset.

Example::

    python tools/create_synthetic_nuscenes.py --out data/synthetic \
        --scenes 10 --seed 0

writes the v1.0-mini tables, lidar sweeps, camera images and class masks, then
runs mmdet3d's own converter for the info pkls and the GT database (skip it
with --no-converter).  See mmdet3d_vitis/datasets/synthetic_nuscenes.py.
"""
import argparse
import json
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmdet3d_vitis.datasets.synthetic_nuscenes import (  # noqa: E402
    DEFAULT_SWEEPS_PER_SAMPLE, generate)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='output data root')
    parser.add_argument('--scenes', type=int, default=10,
                        help='number of scenes, 1..10 (10 = 8 mini_train + '
                        '2 mini_val)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frames', type=int, default=40,
                        help='keyframes (2 Hz) per scene')
    parser.add_argument('--sweeps-per-sample', type=int,
                        default=DEFAULT_SWEEPS_PER_SAMPLE,
                        help='non-keyframe lidar sweeps between keyframes')
    parser.add_argument('--workers', type=int, default=2,
                        help='processes generating scenes in parallel')
    parser.add_argument('--no-converter', action='store_true',
                        help="do not run mmdet3d's info/GT-database converter")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = generate(args.out, scenes=args.scenes, frames=args.frames,
                       seed=args.seed,
                       sweeps_per_sample=args.sweeps_per_sample,
                       workers=args.workers,
                       run_converter=not args.no_converter)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
