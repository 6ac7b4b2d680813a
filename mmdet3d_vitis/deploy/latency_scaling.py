"""Per-stage latency against the number of points of a frame.

The real frame is resampled to each count (``counts``, e.g. 10k .. 300k
points): drawn at random with replacement (seeded) and every drawn point
moved by a small Gaussian jitter (``jitter`` metres on x, y, z; the other
features are kept), so that a count larger than the frame does not just
repeat points inside the same voxels.  Each count is then timed on both
sides with :func:`~.latency.time_float_model` and
:func:`~.latency.time_deployed` (medians and p10 / p90 per stage).
"""
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .latency import STAGES, time_deployed, time_float_model

__all__ = ['DEFAULT_COUNTS', 'resample_points', 'latency_vs_points']

DEFAULT_COUNTS = (10000, 30000, 60000, 100000, 150000, 200000, 300000)


def resample_points(points: np.ndarray, count: int, seed: int = 0,
                    jitter: float = 0.02) -> np.ndarray:
    """``count`` points drawn from ``points`` with replacement, x/y/z
    jittered by ``N(0, jitter)`` metres (seeded; float32)."""
    rng = np.random.RandomState(seed)
    idx = rng.randint(0, points.shape[0], size=int(count))
    out = np.array(points[idx], np.float32, copy=True)
    if jitter:
        out[:, :3] += rng.normal(0.0, jitter, (out.shape[0], 3)).astype(
            np.float32)
    return out


def latency_vs_points(detector, pipeline, points: np.ndarray,
                      counts: Sequence[int] = DEFAULT_COUNTS,
                      repeats: int = 5, warmup: int = 1, threads: int = 1,
                      seed: int = 0, jitter: float = 0.02,
                      metainfo: dict = None) -> dict:
    """Both sides at every count; JSON-able.

    Returns ``dict(counts, seed, jitter, repeats, warmup, threads,
    stages, runs=[dict(num_points, num_pillars, float={stage: summary,
    total}, deployed={stage: summary, total})])``.
    """
    runs = []
    for i, count in enumerate(counts):
        pts = resample_points(points, count, seed + i, jitter)
        flt = time_float_model(detector, pts, repeats, warmup, threads,
                               metainfo)
        dep = time_deployed(pipeline, pts, repeats, warmup)
        runs.append(OrderedDict(
            num_points=int(count), num_pillars=int(flt['num_pillars']),
            float=dict(flt['stages'], total=flt['total']),
            deployed=dict(dep['stages'], total=dep['total'])))
        print(f'  {count:>7} points, {flt["num_pillars"]:>6} pillars: '
              f'float {flt["total"]["median_ms"]:.1f} ms, deployed '
              f'{dep["total"]["median_ms"]:.1f} ms', flush=True)
    return OrderedDict(counts=[int(c) for c in counts], seed=int(seed),
                       jitter=float(jitter), repeats=int(repeats),
                       warmup=int(warmup), threads=int(threads),
                       stages=list(STAGES), runs=runs)
