"""Camera image / class-mask pairs for training the painting segmenter.

:class:`VitisCamSegDataset` (``mmdet3d.registry.DATASETS``) reads a
nuScenes-format info pkl (mmdet3d v1.x) and yields one entry per camera of
every sample: ``samples/CAM_*/<name>.jpg`` with its class mask
``seg_masks/CAM_*/<name>.png`` (0 background, ``k`` = class ``k - 1``, as
the synthetic generator writes them).

Transforms (``mmdet3d.registry.TRANSFORMS``):

* :class:`LoadCamImageAndMask` decodes the JPEG straight at a reduced size
  (libjpeg DCT scaling, several times faster than decoding 1600x900 and
  resizing) and the mask with nearest-neighbour resizing, or at full
  resolution for evaluation;
* mmcv's ``RandomFlip`` / ``Resize`` / ``RandomResize`` work on the result
  (they handle ``img`` and ``gt_seg_map``);
* :class:`PackCamSegInputs` makes ``inputs`` (CHW uint8 tensor, RGB) and a
  data sample with ``gt_sem_seg``.
"""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset
from mmengine.fileio import load
from mmengine.structures import BaseDataElement, PixelData
from PIL import Image

from mmdet3d.registry import DATASETS, TRANSFORMS

from ..errors import UserInputError

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
           'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
SEG_CLASSES = ('background', 'car', 'truck', 'trailer', 'bus',
               'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
               'traffic_cone', 'barrier')


class SegDataError(UserInputError):
    """Missing or inconsistent segmentation data."""


@DATASETS.register_module()
class VitisCamSegDataset(BaseDataset):
    """One (camera image, class mask) pair per camera of each info sample.

    Args:
        ann_file: info pkl, relative to ``data_root`` or absolute.
        data_root: dataset root (with ``samples/`` and ``seg_masks/``).
        cameras: cameras used per sample (default all six).
        img_dir / mask_dir: image and mask folders under ``data_root``;
            ``CAM_*/<img_path>`` is appended (the mask name has ``.png``).
        max_samples: use only the first N info samples (tests, quick runs).
    """

    METAINFO = dict(classes=SEG_CLASSES)

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 cameras: Sequence[str] = CAMERAS,
                 img_dir: str = 'samples',
                 mask_dir: str = 'seg_masks',
                 max_samples: Optional[int] = None,
                 **kwargs):
        self.cameras = tuple(cameras)
        self.img_dir = img_dir
        self.mask_dir = mask_dir
        self.max_samples = max_samples
        super().__init__(ann_file=ann_file, data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise SegDataError(f'info file {self.ann_file} does not exist')
        infos = load(self.ann_file)
        samples = infos['data_list'] if isinstance(infos, dict) else infos
        if self.max_samples is not None:
            samples = samples[:self.max_samples]
        root = self.data_root or ''
        data_list = []
        for info in samples:
            images = info.get('images') or {}
            for cam in self.cameras:
                if cam not in images:
                    raise SegDataError(
                        f'sample {info.get("token")} of {self.ann_file} '
                        f'has no {cam} image')
                name = osp.basename(images[cam]['img_path'])
                data_list.append(dict(
                    img_path=osp.join(root, self.img_dir, cam, name),
                    seg_map_path=osp.join(root, self.mask_dir, cam,
                                          osp.splitext(name)[0] + '.png'),
                    cam=cam, sample_token=info.get('token'),
                    seg_fields=[]))
        if data_list and not osp.isfile(data_list[0]['seg_map_path']):
            raise SegDataError(
                f'class mask {data_list[0]["seg_map_path"]} does not exist: '
                f'the dataset needs per-camera masks under '
                f'{osp.join(root, self.mask_dir)} (the synthetic generator '
                f'writes them; real nuScenes has none)')
        return data_list


def _load_rgb(path: str, size: Optional[Tuple[int, int]]) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``; ``size = (w, h)`` decodes at reduced scale
    via JPEG draft mode, then resizes exactly."""
    with Image.open(path) as im:
        if size is not None:
            im.draft('RGB', tuple(size))
        im = im.convert('RGB')
        if size is not None and im.size != tuple(size):
            im = im.resize(tuple(size), Image.BILINEAR)
        return np.asarray(im)


def _load_mask(path: str, size: Optional[Tuple[int, int]]) -> np.ndarray:
    with Image.open(path) as im:
        if size is not None and im.size != tuple(size):
            im = im.resize(tuple(size), Image.NEAREST)
        return np.asarray(im, dtype=np.uint8)


@TRANSFORMS.register_module()
class LoadCamImageAndMask(BaseTransform):
    """Load ``img`` (RGB) at ``img_scale`` and ``gt_seg_map`` at
    ``seg_scale`` (``(w, h)``; ``None``: the file's own size).

    ``seg_scale='img'`` uses the image's size (training); ``None`` keeps
    the full-resolution mask (evaluation: the model upsamples its scores
    to the mask's size). ``cache=True`` keeps decoded pairs in memory (per
    dataloader worker), which pays off from the second epoch on.
    """

    def __init__(self, img_scale: Optional[Tuple[int, int]] = None,
                 seg_scale='img', with_seg: bool = True,
                 cache: bool = False):
        self.img_scale = tuple(img_scale) if img_scale else None
        self.seg_scale = seg_scale
        self.with_seg = with_seg
        self.cache = {} if cache else None

    def _load(self, img_path, seg_path):
        img = _load_rgb(img_path, self.img_scale)
        mask = None
        if self.with_seg:
            if not osp.isfile(seg_path):
                raise SegDataError(f'class mask {seg_path} does not exist')
            seg_scale = ((img.shape[1], img.shape[0])
                         if self.seg_scale == 'img' else self.seg_scale)
            mask = _load_mask(seg_path, seg_scale)
        return img, mask

    def transform(self, results: dict) -> dict:
        key = (results['img_path'], results.get('seg_map_path'))
        if self.cache is not None and key in self.cache:
            img, mask = self.cache[key]
        else:
            img, mask = self._load(*key)
            if self.cache is not None:
                self.cache[key] = (img, mask)
        results['img'] = img.copy() if self.cache is not None else img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        if mask is not None:
            results['gt_seg_map'] = (mask.copy() if self.cache is not None
                                     else mask)
            results.setdefault('seg_fields', []).append('gt_seg_map')
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(img_scale={self.img_scale}, '
                f'seg_scale={self.seg_scale}, cache={self.cache is not None})')


@TRANSFORMS.register_module()
class PackCamSegInputs(BaseTransform):
    """``inputs``: CHW uint8 tensor; ``data_samples``: a data element with
    ``gt_sem_seg`` (``PixelData``, ``(1, H, W)`` long) and metainfo."""

    META_KEYS = ('img_path', 'seg_map_path', 'cam', 'sample_token',
                 'ori_shape', 'img_shape', 'flip', 'flip_direction')

    def __init__(self, meta_keys: Sequence[str] = META_KEYS):
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        sample = BaseDataElement(metainfo={
            k: results[k] for k in self.meta_keys if k in results})
        if 'gt_seg_map' in results:
            seg = np.ascontiguousarray(results['gt_seg_map'])
            sample.gt_sem_seg = PixelData(
                data=torch.from_numpy(seg.astype(np.int64))[None])
        return dict(inputs=torch.from_numpy(img), data_samples=sample)
