"""LiDAR points into camera images, with the matrices of mmdet3d's infos.

``lidar2cam`` (4 x 4) and ``cam2img`` (3 x 3 or 4 x 4) are what
``info['images'][CAM]`` holds in mmdet3d's v1.x info format (the nuScenes
converter writes them; so does the synthetic generator).
"""
from typing import Tuple

import numpy as np

from ..errors import UserInputError

__all__ = ['PaintingError', 'project_to_image']


class PaintingError(UserInputError):
    """Painting cannot run on this sample (missing camera, bad matrix...)."""


def _matrix(name: str, value, shapes) -> np.ndarray:
    m = np.asarray(value, np.float64)
    if m.shape not in shapes:
        raise PaintingError(f'{name} must be one of {shapes}, got {m.shape}')
    if not np.isfinite(m).all():
        raise PaintingError(f'{name} holds NaN or inf')
    return m


def project_to_image(xyz: np.ndarray, lidar2cam, cam2img,
                     image_hw: Tuple[int, int], min_depth: float = 1.0
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project LiDAR points into one camera.

    Args:
        xyz: ``(N, 3)`` points in the LiDAR frame.
        lidar2cam: ``(4, 4)`` LiDAR -> camera transform.
        cam2img: ``(3, 3)`` or ``(4, 4)`` intrinsics.
        image_hw: ``(H, W)`` of the image.
        min_depth: points closer than this (metres, along the optical axis)
            count as not seen (the reference keeps depth > 1 m).

    Returns:
        ``(pixel (N, 2) int64 (column, row), depth (N,), seen (N,) bool)``:
        ``seen`` is depth > min_depth and the pixel inside the image;
        pixels of unseen points are clipped into the image (never index
        with them unmasked).
    """
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    l2c = _matrix('lidar2cam', lidar2cam, [(4, 4)])
    c2i = _matrix('cam2img', cam2img, [(3, 3), (4, 4)])[:3, :3]
    h, w = (int(v) for v in image_hw)
    cam = xyz @ l2c[:3, :3].T + l2c[:3, 3]
    depth = cam[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        uvw = cam @ c2i.T
        u = uvw[:, 0] / uvw[:, 2]
        v = uvw[:, 1] / uvw[:, 2]
    front = depth > min_depth
    # floor: pixel (c, r) covers [c, c + 1) x [r, r + 1)
    col = np.floor(np.where(front, u, -1)).astype(np.int64)
    row = np.floor(np.where(front, v, -1)).astype(np.int64)
    seen = front & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    pixel = np.stack([np.clip(col, 0, w - 1), np.clip(row, 0, h - 1)], 1)
    return pixel, depth, seen
