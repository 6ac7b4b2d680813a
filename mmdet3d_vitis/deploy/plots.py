"""The model-zoo pictures (matplotlib, Agg canvas, PNGs written atomically).

* :func:`plot_detection_comparison`: one frame in bird's-eye view with the
  ground truth, the float and the int8 detections side by side;
* :func:`plot_layer_sqnr`: SQNR per quantized DPU layer
  (:func:`mmdet3d_vitis.quantization.layer_error.model_sqnr`);
* :func:`plot_latency_scaling`: per-stage latency of both sides against the
  number of points (:func:`.latency_scaling.latency_vs_points`).
"""
import io
import math
from typing import Dict, Optional, Sequence

import numpy as np

from ..fileio import atomic_write
from .bev_plot import plot_bev

__all__ = ['plot_detection_comparison', 'plot_layer_sqnr',
           'plot_latency_scaling']

STAGE_NAMES = dict(voxelize='voxelize', subgraph0='subgraph 0 (pillar enc)',
                   scatter='scatter', subgraph1='subgraph 1 (BEV + head)',
                   decode_nms='decode + NMS', total='frame total')


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png: str) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    data = buf.getvalue()
    atomic_write(out_png, lambda f: f.write(data))
    return out_png


def _keep(dets: dict, score_thr: float):
    if dets is None:
        return np.zeros((0, 7)), np.zeros(0, np.int64)
    scores = np.asarray(dets.get('scores', np.ones(len(dets['labels']))))
    keep = scores >= score_thr
    return (np.asarray(dets['bboxes'])[keep],
            np.asarray(dets['labels'])[keep])


def plot_detection_comparison(points: np.ndarray, gt: dict, float_dets: dict,
                              int8_dets: dict, out_png: str,
                              class_names: Optional[Sequence[str]] = None,
                              point_cloud_range=None, score_thr: float = 0.3,
                              title: str = '') -> str:
    """Ground truth / float / int8 boxes on the frame's points.

    ``gt``: ``dict(bboxes, labels)``; ``float_dets`` / ``int8_dets``:
    ``dict(bboxes, scores, labels)`` (detections under ``score_thr`` are
    not drawn).
    """
    f_boxes, f_labels = _keep(float_dets, score_thr)
    q_boxes, q_labels = _keep(int8_dets, score_thr)
    panels = [
        ('ground truth', np.asarray(gt['bboxes']), np.asarray(gt['labels']),
         None),
        (f'float (score >= {score_thr:g})', f_boxes, f_labels, None),
        (f'int8 (score >= {score_thr:g})', q_boxes, q_labels, None),
    ]
    return plot_bev(points, panels, out_png=out_png, title=title,
                    class_names=class_names,
                    point_cloud_range=point_cloud_range)


def plot_layer_sqnr(sqnr: Dict[str, list], out_png: str,
                    title: str = '') -> str:
    """Horizontal bars: SQNR [dB] of every quantized DPU layer, in graph
    order, one colour per subgraph."""
    rows = [(sub, r) for sub, rs in sqnr.items() for r in rs]
    colours = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red')
    fig = _figure(9, max(3.0, 0.28 * len(rows) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    labels, values, cols = [], [], []
    subs = list(sqnr)
    for sub, r in rows:
        name = r['tensor'].split('::', 1)[-1].split('/', 1)[-1]
        labels.append(f'{sub}: {name}' if len(name) < 60 else
                      f'{sub}: ...{name[-57:]}')
        v = r['sqnr_db']
        values.append(v if math.isfinite(v) else 0.0)
        cols.append(colours[subs.index(sub) % len(colours)])
    y = np.arange(len(rows))[::-1]
    ax.barh(y, values, color=cols)
    for yi, v, (_, r) in zip(y, values, rows):
        text = f'{v:.1f}' if math.isfinite(r['sqnr_db']) else 'exact'
        ax.text(v, yi, f' {text}', va='center', fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel('SQNR [dB] = 10 log10(sum x^2 / sum (x - q)^2), '
                  'float x vs int8 fake-quant q')
    fig.suptitle(title or 'per-layer quantization error (SQNR per DPU '
                 'layer output)', fontsize=9)
    ax.grid(axis='x', alpha=0.3)
    return _save(fig, out_png)


def plot_latency_scaling(scaling: dict, out_png: str,
                         title: str = '') -> str:
    """Per-stage median latency (p10..p90 band) against the number of
    points: float PyTorch (left) and deployed int8 ONNX Runtime (right)."""
    runs = scaling['runs']
    x = np.array([r['num_points'] for r in runs], np.float64) / 1e3
    stages = list(scaling['stages']) + ['total']
    fig = _figure(13, 5.2)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for ax, side, name in zip(axes, ('float', 'deployed'),
                              ('float PyTorch', 'deployed int8 ORT')):
        for stage in stages:
            med = np.array([r[side][stage]['median_ms'] for r in runs])
            lo = np.array([r[side][stage]['p10_ms'] for r in runs])
            hi = np.array([r[side][stage]['p90_ms'] for r in runs])
            style = dict(lw=2.2, color='k') if stage == 'total' else {}
            line, = ax.plot(x, med, marker='o', ms=3,
                            label=STAGE_NAMES.get(stage, stage), **style)
            ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())
        ax.set_yscale('log')
        ax.set_xlabel('points in the frame [thousands] (resampled from the '
                      'real frame)')
        ax.set_ylabel('latency per frame [ms], median (p10..p90 band)')
        ax.set_title(f'{name}, {scaling["threads"]} thread(s)', fontsize=10)
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7, loc='upper left')
        ax2 = ax.twiny()
        ax2.set_xlim(ax.get_xlim())
        ax2.set_xticks(x)
        ax2.set_xticklabels([str(r['num_pillars']) for r in runs],
                            fontsize=6, rotation=45)
        ax2.set_xlabel('pillars', fontsize=7)
    fig.suptitle(title or 'latency per stage vs number of points',
                 fontsize=10)
    return _save(fig, out_png)
