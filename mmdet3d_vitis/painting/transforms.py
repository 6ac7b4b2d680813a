"""PointPainting as an mmdet3d pipeline transform.

``VitisPointPainting`` projects every LiDAR point into the cameras of its
sample (``info['images'][CAM]['lidar2cam' / 'cam2img']``), reads the
per-pixel class scores of that camera and appends them to the point, as
PointPainting (Vora et al. 2020) and the 6th AI Edge Contest reference do.
Where the scores come from (``source``):

* ``'masks'``: per-pixel class-index PNGs (``mask_root/CAM/<image name>.png``,
  0 background, 1..K the dataset's classes in order), e.g. the synthetic
  generator's ``seg_masks/`` -- ground-truth 2D painting;
* ``'oracle'``: a perfect segmenter, for ablations and tests: a point the
  camera sees gets the class of the ground-truth 3D box it lies in
  (``gt_bboxes_3d`` / ``gt_labels_3d``, so ``LoadAnnotations3D`` must come
  first), background outside boxes;
* ``'segmenter'``: a trained 2D segmenter (``VitisSemanticFPN``) run on
  each camera image; ``mode='scores'`` appends its softmax scores (summed
  into the painted classes), ``'onehot'`` its argmax;
* ``'oracle_2d'``: the ground-truth boxes projected into each camera and
  rasterised (nearest box on top), then painted through the camera like a
  segmenter's masks -- box silhouettes are larger than objects, so points
  behind a nearer object take its class, as with a real segmenter.

The painted classes are ``('background', *class_map targets)``: ``class_map``
maps the dataset's label index to a painted class index (default: label +
1, every class kept); unmapped labels paint background.  ``mode='scores'``
appends the class scores (hard labels give one-hot rows, as the reference's
softmax would for a confident segmenter), ``'onehot'`` the same as one-hot
(the zoo's 11 one-hot channels).  A point seen by several cameras takes the
first camera in ``cameras`` that sees it (a deterministic answer).  Points
no camera sees are dropped (``keep_outside=False``, the reference) or kept
with all-zero scores.
"""
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS

from .projection import PaintingError, project_to_image

__all__ = ['VitisPointPainting', 'ALL_CAMERAS', 'render_box_labels']

ALL_CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
               'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
SOURCES = ('masks', 'oracle', 'oracle_2d', 'segmenter')
MODES = ('scores', 'onehot')


def _read_png_labels(path: str) -> np.ndarray:
    from PIL import Image
    if not osp.isfile(path):
        raise PaintingError(f'segmentation mask {path} not found')
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int64)


def _image_hw(path: str) -> tuple:
    from PIL import Image
    if not osp.isfile(path):
        raise PaintingError(f'camera image {path} not found')
    with Image.open(path) as im:  # reads the header only
        w, h = im.size
    return h, w


def _fill_convex(label_map: np.ndarray, hull: np.ndarray, value: int) -> None:
    """Set the pixels whose centre lies in the convex polygon ``hull``
    ((K, 2) column, row, counter-clockwise or clockwise)."""
    h, w = label_map.shape
    c0, r0 = np.floor(hull.min(0)).astype(int)
    c1, r1 = np.ceil(hull.max(0)).astype(int)
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, w - 1), min(r1, h - 1)
    if c0 > c1 or r0 > r1:
        return
    cols, rows = np.meshgrid(np.arange(c0, c1 + 1) + 0.5,
                             np.arange(r0, r1 + 1) + 0.5)
    inside = np.ones(cols.shape, bool)
    sign = None
    for k in range(len(hull)):
        a, b = hull[k], hull[(k + 1) % len(hull)]
        cross = (b[0] - a[0]) * (rows - a[1]) - (b[1] - a[1]) * (cols - a[0])
        if sign is None:
            # orientation from the polygon's signed area
            area = np.sum(hull[:, 0] * np.roll(hull[:, 1], -1) -
                          np.roll(hull[:, 0], -1) * hull[:, 1])
            sign = 1.0 if area >= 0 else -1.0
        inside &= sign * cross >= 0
    label_map[r0:r1 + 1, c0:c1 + 1][inside] = value


def _convex_hull(pts: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; (K, 2) -> hull vertices."""
    pts = np.unique(pts, axis=0)
    if len(pts) < 3:
        return pts

    def half(points):
        out = []
        for p in points:
            while len(out) >= 2 and np.cross(out[-1] - out[-2],
                                             p - out[-2]) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


# corner pairs of mmdet3d's box corners (LiDARInstance3DBoxes.corners)
_BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
              (0, 4), (1, 5), (2, 6), (3, 7))


def render_box_labels(corners: np.ndarray, labels: np.ndarray, lidar2cam,
                      cam2img, image_hw, min_depth: float = 0.1
                      ) -> np.ndarray:
    """A ``(H, W)`` painted-class map of 3D boxes seen by one camera: each
    box's projected convex hull, far boxes first so nearer ones cover them.

    Args:
        corners: ``(N, 8, 3)`` box corners in the LiDAR frame.
        labels: ``(N,)`` painted class per box (0 paints nothing).
    """
    h, w = image_hw
    out = np.zeros((h, w), np.int64)
    l2c = np.asarray(lidar2cam, np.float64)
    c2i = np.asarray(cam2img, np.float64)[:3, :3]
    depth_order = []
    for i in range(len(corners)):
        cam = corners[i] @ l2c[:3, :3].T + l2c[:3, 3]
        if (cam[:, 2] <= min_depth).all() or labels[i] == 0:
            continue
        depth_order.append((float(cam[:, 2].mean()), i, cam))
    for _, i, cam in sorted(depth_order, key=lambda t: -t[0]):
        # a box crossing the near plane: its corners in front plus where
        # its edges cross the plane (the box clipped to the visible side)
        ahead = cam[:, 2] > min_depth
        front = [cam[ahead]]
        for a, b in _BOX_EDGES:
            if ahead[a] != ahead[b]:
                t = (min_depth - cam[a, 2]) / (cam[b, 2] - cam[a, 2])
                front.append((cam[a] + t * (cam[b] - cam[a]))[None])
        front = np.concatenate(front)
        front[:, 2] = np.maximum(front[:, 2], min_depth)
        uvw = front @ c2i.T
        uv = uvw[:, :2] / uvw[:, 2:3]
        hull = _convex_hull(uv)
        if len(hull) >= 3:
            _fill_convex(out, hull, int(labels[i]))
    return out


@TRANSFORMS.register_module()
class VitisPointPainting(BaseTransform):
    """Append per-point class scores from the sample's cameras (module doc).

    Args:
        source: ``'masks'``, ``'oracle'`` or ``'oracle_2d'``.
        cameras: the cameras to paint from, in priority order (the reference
            uses ``('CAM_FRONT',)``).
        num_classes: painted classes including background (e.g. 3 for the
            contest's background / car / pedestrian, 11 for nuScenes).
        class_map: ``{dataset label: painted class}``; default label + 1.
        mode: ``'scores'`` or ``'onehot'``.
        keep_outside: keep points no camera sees (zero scores) instead of
            dropping them.
        min_depth: metres along the optical axis below which a point is not
            seen (the reference: 1 m).
        mask_root: folder of ``CAM/<image name>.png`` masks (``'masks'``).
        segmenter: ``dict(config=..., checkpoint=...)`` of a 2D segmenter
            with ``predict_scores`` (``VitisSemanticFPN``) for
            ``source='segmenter'``; its classes are background + the
            dataset's, in order (``class_map`` keys are its label - 1).
        append_scores: False keeps the camera-view filtering but appends
            no scores (the unpainted baseline of a painted model, on the
            same points).
        img_root: prefix of the infos' relative ``img_path`` (for the
            image sizes); ``{cam}`` in it becomes the camera name, e.g.
            ``'data/nuscenes/samples/{cam}'``.
    """

    def __init__(self, source: str = 'masks',
                 cameras: Sequence[str] = ('CAM_FRONT', ),
                 num_classes: int = 11,
                 class_map: Optional[Dict[int, int]] = None,
                 mode: str = 'scores', keep_outside: bool = False,
                 min_depth: float = 1.0, mask_root: Optional[str] = None,
                 img_root: Optional[str] = None,
                 append_scores: bool = True,
                 segmenter: Optional[dict] = None):
        if source not in SOURCES:
            raise PaintingError(f'source must be one of {SOURCES}, got '
                                f'{source!r}')
        if mode not in MODES:
            raise PaintingError(f'mode must be one of {MODES}, got {mode!r}')
        if not cameras or any(c not in ALL_CAMERAS for c in cameras):
            raise PaintingError(f'cameras must be among {ALL_CAMERAS}, got '
                                f'{cameras!r}')
        if source == 'masks' and not mask_root:
            raise PaintingError("source='masks' needs mask_root")
        if source == 'segmenter' and not (
                isinstance(segmenter, dict) and segmenter.get('config')):
            raise PaintingError(
                "source='segmenter' needs segmenter=dict(config=..., "
                'checkpoint=...)')
        if int(num_classes) < 2:
            raise PaintingError('num_classes counts background and at '
                                'least one class (>= 2)')
        self.source = source
        self.cameras = tuple(cameras)
        self.num_classes = int(num_classes)
        self.class_map = None if class_map is None else {
            int(k): int(v) for k, v in class_map.items()}
        if self.class_map and not all(
                0 <= v < self.num_classes for v in self.class_map.values()):
            raise PaintingError(
                f'class_map targets must be in [0, {self.num_classes})')
        self.mode = mode
        self.keep_outside = bool(keep_outside)
        self.min_depth = float(min_depth)
        self.mask_root = mask_root
        self.img_root = img_root
        self.append_scores = bool(append_scores)
        self.segmenter = segmenter
        self._segmenter = None  # built on first use

    def painted_class(self, labels: np.ndarray) -> np.ndarray:
        """Dataset label (-1: background) -> painted class index."""
        labels = np.asarray(labels, np.int64)
        if self.class_map is None:
            out = labels + 1
            out[(labels < 0) | (out >= self.num_classes)] = 0
            return out
        lut = np.zeros(max(self.class_map, default=0) + 2, np.int64)
        for k, v in self.class_map.items():
            lut[k + 1] = v
        ok = (labels >= -1) & (labels + 1 < len(lut))
        return np.where(ok, lut[np.clip(labels + 1, 0, len(lut) - 1)], 0)

    def _image_path(self, cam: str, cam_info: dict) -> str:
        path = cam_info.get('img_path')
        if not path:
            raise PaintingError(f'{cam}: camera info has no img_path')
        if self.img_root and not osp.isabs(path) and not osp.isfile(path):
            path = osp.join(self.img_root.format(cam=cam), path)
        return path

    def _gt(self, results: dict):
        boxes = results.get('gt_bboxes_3d')
        if boxes is None:
            raise PaintingError(
                f"source={self.source!r} paints from gt_bboxes_3d: put "
                'LoadAnnotations3D(with_bbox_3d=True, with_label_3d=True) '
                'before VitisPointPainting')
        return boxes, self.painted_class(np.asarray(results['gt_labels_3d']))

    def _box_classes(self, results: dict, xyz: np.ndarray) -> np.ndarray:
        """Painted class of the GT box each point lies in (the first box
        when boxes overlap), 0 outside boxes."""
        from mmcv.ops import points_in_boxes_cpu
        boxes, labels = self._gt(results)
        if len(boxes) == 0 or len(xyz) == 0:
            return np.zeros(len(xyz), np.int64)
        member = points_in_boxes_cpu(
            torch.from_numpy(np.ascontiguousarray(xyz[None],
                                                  np.float32)),
            boxes.tensor[None, :, :7].float())[0].numpy()
        inside = member.any(1)
        return np.where(inside, labels[member.argmax(1)], 0)

    def _segmenter_model(self):
        if self._segmenter is None:
            from mmengine.config import Config
            from mmengine.runner import load_checkpoint
            from mmdet3d.registry import MODELS
            cfg = self.segmenter
            if not osp.isfile(cfg.get('checkpoint') or ''):
                raise PaintingError(
                    f"segmenter checkpoint {cfg.get('checkpoint')!r} not "
                    'found (train one with tools/train.py configs/'
                    'pointpainting/semantic-fpn_r18_synthetic-cams.py)')
            model = MODELS.build(Config.fromfile(cfg['config']).model)
            load_checkpoint(model, cfg['checkpoint'], map_location='cpu',
                            logger='silent')
            self._segmenter = model.eval()
        return self._segmenter

    def _segmenter_scores(self, cam: str, cam_info: dict):
        """``(painted-class scores (K, h, w) at the network's resolution,
        the image's (H, W))``: the segmenter's softmax over background +
        the dataset classes, summed into the painted classes."""
        from PIL import Image
        model = self._segmenter_model()
        path = self._image_path(cam, cam_info)
        if not osp.isfile(path):
            raise PaintingError(f'camera image {path} not found')
        with Image.open(path) as im:
            w, h = im.size
            size = model.test_input_size or (h, w)
            im.draft('RGB', (size[1], size[0]))  # JPEG: decode reduced
            rgb = np.asarray(im.convert('RGB').resize((size[1], size[0])),
                             np.float32)
        with torch.no_grad():
            seg = model.predict_scores(
                torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].numpy()
        target = self.painted_class(np.arange(seg.shape[0]) - 1)
        out = np.zeros((self.num_classes, ) + seg.shape[1:], np.float32)
        np.add.at(out, target, seg)
        return out, (h, w)

    def _class_map(self, results: dict, cam: str, cam_info: dict):
        img = self._image_path(cam, cam_info)
        if self.source == 'masks':
            name = osp.splitext(osp.basename(img))[0] + '.png'
            mask = _read_png_labels(osp.join(self.mask_root, cam, name))
            return self.painted_class(mask - 1)
        boxes, labels = self._gt(results)
        corners = boxes.corners.numpy() if len(boxes) else np.zeros(
            (0, 8, 3))
        return render_box_labels(corners, labels, cam_info['lidar2cam'],
                                 cam_info['cam2img'], _image_hw(img))

    def transform(self, results: dict) -> dict:
        points = results['points']
        images = results.get('images') or {}
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise PaintingError(
                f'sample {results.get("sample_idx")} has no camera info for '
                f'{missing} (info["images"])')
        xyz = points.coord.numpy()
        n = xyz.shape[0]
        painted = np.zeros(n, np.int64)
        camera = np.full(n, -1, np.int64)
        box_class = (self._box_classes(results, xyz)
                     if self.source == 'oracle' else None)
        scores = np.zeros((n, self.num_classes), np.float32)
        for ci, cam in enumerate(self.cameras):
            info = images[cam]
            soft = cls_map = None
            if self.source == 'segmenter':
                soft, hw = self._segmenter_scores(cam, info)
            elif box_class is None:
                cls_map = self._class_map(results, cam, info)
                hw = cls_map.shape
            else:
                hw = _image_hw(self._image_path(cam, info))
            pix, _, seen = project_to_image(xyz, info['lidar2cam'],
                                            info['cam2img'], hw,
                                            self.min_depth)
            new = seen & (camera < 0)
            if soft is not None:
                # the score map is at the network's resolution
                sh, sw = soft.shape[1:]
                rows = pix[new, 1] * sh // hw[0]
                cols = pix[new, 0] * sw // hw[1]
                scores[new] = soft[:, rows, cols].T
                painted[new] = scores[new].argmax(1)
            else:
                painted[new] = (box_class[new] if box_class is not None
                                else cls_map[pix[new, 1], pix[new, 0]])
            camera[new] = ci
        seen_any = camera >= 0
        if self.source != 'segmenter' or self.mode == 'onehot':
            scores[:] = 0
            scores[np.flatnonzero(seen_any), painted[seen_any]] = 1.0
        keep = np.ones(n, bool) if self.keep_outside else seen_any
        feats = points.tensor[torch.from_numpy(keep)]
        if self.append_scores:
            feats = torch.cat([feats, torch.from_numpy(scores[keep])], dim=1)
        results['points'] = type(points)(
            feats, points_dim=feats.shape[1],
            attribute_dims=points.attribute_dims)
        results['painted_camera'] = camera[keep]
        results['painted_class'] = np.where(seen_any, painted, -1)[keep]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(source={self.source!r}, cameras='
                f'{self.cameras}, num_classes={self.num_classes}, mode='
                f'{self.mode!r}, keep_outside={self.keep_outside})')
