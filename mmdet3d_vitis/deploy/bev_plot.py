"""Bird's-eye-view pictures of a point cloud and 3D boxes (matplotlib, Agg).

    plot_bev(points, bboxes, labels, 'frame.png', class_names=names)
    plot_bev(points, [('GT', gt_boxes, gt_labels, 'green'),
                      ('float', f_boxes, f_labels, None),
                      ('int8', q_boxes, q_labels, None)],
             out_png='compare.png', class_names=names,
             point_cloud_range=pipeline.point_cloud_range)

Boxes are LiDAR boxes as ``LiDARInstance3DBoxes.tensor`` rows ``(x, y, z,
dx, dy, dz, yaw, ...)``; each is drawn as its rotated BEV rectangle with a
heading tick from the centre to the front edge.  The PNG is rendered in
memory and written atomically (no half-written file if anything fails).
"""
import io
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserInputError
from ..fileio import atomic_write

__all__ = ['bev_corners', 'plot_bev']

#: default colours of classes 0, 1, ... (matplotlib's tab10, cycled)
CLASS_COLOURS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red',
                 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive',
                 'tab:cyan', 'gold')


def bev_corners(boxes) -> np.ndarray:
    """``(K, 4, 2)`` BEV corners (x, y) of ``(K, >=7)`` LiDAR boxes, counter-
    clockwise starting at the front-left one (front = +x at yaw 0)."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.shape[0] and boxes.shape[1] < 7:
        raise UserInputError(
            f'boxes must have >= 7 columns (x, y, z, dx, dy, dz, yaw), got '
            f'{boxes.shape[1]}')
    half = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    local = half[None] * boxes[:, None, 3:5]  # (K, 4, 2)
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    rot = np.stack([np.stack([cos, -sin], -1),
                    np.stack([sin, cos], -1)], -2)  # (K, 2, 2)
    return np.einsum('kij,kcj->kci', rot, local) + boxes[:, None, :2]


def _panels(boxes_list, labels, colour=None) -> List[Tuple]:
    """Normalise to ``[(title, boxes (K, C), labels (K,), colour)]``."""
    if boxes_list is None:
        return [('', np.zeros((0, 7)), np.zeros(0, np.int64), colour)]
    if isinstance(boxes_list, np.ndarray) or (
            hasattr(boxes_list, 'shape') and hasattr(boxes_list, 'dtype')):
        boxes_list = [('', boxes_list, labels, colour)]
    panels = []
    for i, entry in enumerate(boxes_list):
        if isinstance(entry, dict):
            entry = (entry.get('title', ''), entry.get('bboxes'),
                     entry.get('labels'), entry.get('colour'))
        entry = tuple(entry)
        if not 2 <= len(entry) <= 4:
            raise UserInputError(
                f'panel {i}: expected (title, bboxes, labels, colour), got '
                f'{len(entry)} items')
        entry = entry + (None, ) * (4 - len(entry))
        title, boxes, labs, col = entry
        if hasattr(boxes, 'tensor'):  # LiDARInstance3DBoxes
            boxes = boxes.tensor
        if hasattr(boxes, 'detach'):  # torch tensor
            boxes = boxes.detach().cpu().numpy()
        if labs is not None and hasattr(labs, 'detach'):
            labs = labs.detach().cpu().numpy()
        boxes = np.asarray(boxes if boxes is not None else np.zeros((0, 7)),
                           np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, max(7, boxes.shape[-1]
                                         if boxes.ndim == 2 else 7))
        if boxes.ndim != 2 or boxes.shape[1] < 7:
            raise UserInputError(
                f'panel {i} ({title!r}): boxes must be (K, >=7), got shape '
                f'{tuple(boxes.shape)}')
        labs = (np.zeros(boxes.shape[0], np.int64) if labs is None else
                np.asarray(labs).astype(np.int64).reshape(-1))
        if labs.shape[0] != boxes.shape[0]:
            raise UserInputError(
                f'panel {i} ({title!r}): {boxes.shape[0]} boxes but '
                f'{labs.shape[0]} labels')
        panels.append((str(title or ''), boxes, labs, col))
    if not panels:
        raise UserInputError('plot_bev needs at least one panel')
    return panels


def plot_bev(points, boxes_list=None, labels=None, out_png: str = None,
             title: str = '', class_names: Optional[Sequence[str]] = None,
             point_cloud_range: Optional[Sequence[float]] = None,
             max_points: int = 30000, seed: int = 0, dpi: int = 100,
             panel_size: float = 6.0) -> str:
    """Draw the BEV of ``points`` with boxes; one panel per box set.

    Args:
        points: ``(N, >=2)`` array (x, y first); at most ``max_points`` of
            them are drawn (a seeded random subset).
        boxes_list: ``(K, >=7)`` LiDAR boxes (one panel, ``labels`` its
            labels), or a list of panels ``(title, bboxes, labels, colour)``
            (``colour`` None: colour by class; else one matplotlib colour
            for the panel's boxes), e.g. GT / float / int8 side by side.
        labels: the labels of a single ``boxes_list`` array.
        out_png: the PNG file to write (atomically).
        title: the figure's title.
        class_names: names of the labels (legend); default ``class <i>``.
        point_cloud_range: ``[x0, y0, z0, x1, y1, z1]``: the axes limits
            (and a dashed frame); default: fit the points and boxes.

    Returns:
        ``out_png``.
    """
    if not out_png:
        raise UserInputError('plot_bev needs out_png')
    # A bare Figure on the Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Polygon, Rectangle

    panels = _panels(boxes_list, labels)
    pts = np.asarray(points if points is not None else np.zeros((0, 3)),
                     np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 3)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise UserInputError(
            f'points must be (N, >=2), got shape {tuple(pts.shape)}')
    pts = pts[np.isfinite(pts[:, :2]).all(axis=1)]
    if pts.shape[0] > max_points:
        keep = np.random.RandomState(seed).choice(
            pts.shape[0], max_points, replace=False)
        pts = pts[np.sort(keep)]

    def class_colour(label):
        return CLASS_COLOURS[int(label) % len(CLASS_COLOURS)]

    def class_name(label):
        if class_names is not None and 0 <= int(label) < len(class_names):
            return str(class_names[int(label)])
        return f'class {int(label)}'

    n = len(panels)
    fig = Figure(figsize=(panel_size * n, panel_size + 0.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    if point_cloud_range is not None:
        r = [float(v) for v in point_cloud_range]
        xlim, ylim = (r[0], r[3]), (r[1], r[4])
    else:
        xy = [pts[:, :2]] + [
            bev_corners(b).reshape(-1, 2) for _, b, _, _ in panels
            if b.shape[0]
        ]
        xy = np.concatenate(xy) if xy else np.zeros((0, 2))
        xy = xy[np.isfinite(xy).all(axis=1)]
        if xy.shape[0]:
            lo, hi = xy.min(0) - 1.0, xy.max(0) + 1.0
        else:
            lo, hi = np.array([-50.0, -50.0]), np.array([50.0, 50.0])
        xlim, ylim = (lo[0], hi[0]), (lo[1], hi[1])
    for ax, (ptitle, boxes, labs, col) in zip(axes, panels):
        ax.set_facecolor('white')
        if pts.shape[0]:
            ax.scatter(pts[:, 0], pts[:, 1], s=0.4, c='0.45', marker='.',
                       linewidths=0, rasterized=True)
        if point_cloud_range is not None:
            ax.add_patch(Rectangle((xlim[0], ylim[0]), xlim[1] - xlim[0],
                                   ylim[1] - ylim[0], fill=False, ls='--',
                                   lw=0.6, ec='0.6'))
        corners = bev_corners(boxes) if boxes.shape[0] else np.zeros(
            (0, 4, 2))
        seen = {}
        for k in range(boxes.shape[0]):
            if not np.isfinite(corners[k]).all():
                continue
            c = col or class_colour(labs[k])
            ax.add_patch(Polygon(corners[k], closed=True, fill=False, ec=c,
                                 lw=1.0))
            front = corners[k, [0, 3]].mean(0)
            ax.plot([boxes[k, 0], front[0]], [boxes[k, 1], front[1]],
                    color=c, lw=1.0)
            seen.setdefault(class_name(labs[k]) if col is None else ptitle,
                            c)
        if seen:
            ax.legend(handles=[Line2D([], [], color=c, label=name)
                               for name, c in seen.items()],
                      loc='upper right', fontsize=7, framealpha=0.8)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect('equal')
        ax.set_xlabel('x (m)')
        ax.set_ylabel('y (m)')
        ax.set_title(f'{ptitle} ({boxes.shape[0]} boxes)' if ptitle else
                     f'{boxes.shape[0]} boxes', fontsize=10)
    if title:
        fig.suptitle(title, fontsize=9, wrap=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi)
    data = buf.getvalue()
    atomic_write(out_png, lambda f: f.write(data))
    return out_png
