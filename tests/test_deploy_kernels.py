"""The compiled deploy kernels equal the numpy reference glue.

:mod:`mmdet3d_vitis.deploy.glue` holds the reference implementations (each
tested against mmcv / mmdet3d in test_deploy_glue.py); the runtime uses
:mod:`mmdet3d_vitis.deploy.kernels`.  These tests drive both with the same
random clouds, pillars and boxes and require identical results, frame after
frame on reused buffers.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdet3d_vitis.deploy import glue, kernels

VOXEL = [0.5, 0.5, 8.0]
PCR = [-10.0, -8.0, -5.0, 10.0, 8.0, 3.0]
MAX_POINTS = 8


class _Encoder:
    """The Pipeline's use of voxelize_encode, buffers reused."""

    def __init__(self, max_voxels, num_voxels, num_features, decoration,
                 input_scale, fix_pos, dtype=np.int8):
        self.vs, pcr, self.grid = glue._voxel_geometry(VOXEL, PCR)
        self.range_min = pcr[:3].copy()
        self.offset = (np.asarray(VOXEL) / 2 + np.asarray(PCR[:3])).astype(
            np.float32)
        self.max_voxels = max_voxels
        self.decoration = decoration
        self.table = np.full(int(np.prod(self.grid)), -1, np.int32)
        self.cell_of = np.empty(1 << 16, np.int64)
        self.point_ids = np.zeros((max_voxels, MAX_POINTS), np.int32)
        self.num_points = np.zeros(max_voxels, np.int32)
        self.prev = np.zeros(max_voxels, np.int32)
        self.prev_num = 0
        self.coors = np.zeros((max_voxels, 3), np.int32)
        self.scale = (np.asarray(input_scale, np.float32) *
                      np.float32(2.0**fix_pos))
        self.mul = 1.0 if dtype == np.int8 else 2.0**-fix_pos
        self.out = np.zeros((len(input_scale), num_voxels, MAX_POINTS), dtype)

    def __call__(self, pts):
        num, total = kernels.voxelize_encode(
            pts, self.vs, self.range_min, self.grid, MAX_POINTS,
            self.max_voxels, self.table, self.cell_of, self.point_ids,
            self.num_points, self.prev, self.prev_num, self.coors,
            self.offset, self.decoration['with_cluster_center'],
            self.decoration['with_voxel_center'],
            self.decoration['with_distance'], self.scale, self.mul, self.out)
        self.prev_num = num
        return num, total


def _reference(pts, max_voxels, decoration, input_scale, fix_pos, slots):
    voxels, num_points, coors = glue.voxelize(pts, VOXEL, PCR, MAX_POINTS,
                                              max_voxels)
    scale = np.asarray(input_scale, np.float32) * np.float32(2.0**fix_pos)
    x = glue.decorate_pillars(voxels, num_points, coors, VOXEL, PCR,
                              input_scale=scale, **decoration)
    glue.quantize_input(x, fix_pos, prescaled=True)  # onto the int8 grid
    full = np.zeros((x.shape[1], slots, MAX_POINTS), np.float32)
    full[:, :x.shape[2]] = x[0] * 2.0**fix_pos  # integers
    return full, coors


def _cloud(rng, n, width=5):
    pts = rng.uniform([-12, -10, -6, 0, 0][:width], [12, 10, 4, 1, 1][:width],
                      (n, width)).astype(np.float32)
    if n > 4:  # crowd a few voxels past MAX_POINTS, and exact boundaries
        pts[:n // 4, :3] = pts[0, :3] + rng.normal(0, 0.05, (n // 4, 3))
        pts[-1, :3] = [PCR[3], 0, 0]  # on the upper x bound: out
        pts[-2, :3] = [PCR[0], PCR[1], PCR[2]]  # on the lower corner: in
    return pts


@pytest.mark.parametrize('with_distance', [False, True])
@pytest.mark.parametrize('dtype', [np.int8, np.float32])
def test_voxelize_encode_equals_reference_frame_after_frame(
        with_distance, dtype):
    rng = np.random.default_rng(0)
    decoration = dict(with_cluster_center=True, with_voxel_center=True,
                      with_distance=with_distance)
    channels = 5 + 6 + with_distance
    input_scale = rng.choice([0.25, 0.5, 1.0, 2.0], channels)
    fix_pos, max_voxels, slots = 5, 300, 320
    enc = _Encoder(max_voxels, slots, 5, decoration, input_scale, fix_pos,
                   dtype)
    # big, small, empty, overflowing, big again: stale slots must clear
    for n in (3000, 40, 0, 9000, 700, 2500):
        pts = _cloud(rng, n)
        if n == 700:  # huge features saturate, never wrap
            pts[-30:-20, 3] = 1e30
            pts[-40:-30, 4] = -3e38
        num, total = enc(pts)
        ref, coors = _reference(pts, max_voxels, decoration, input_scale,
                                fix_pos, slots)
        assert num == coors.shape[0]
        assert np.array_equal(enc.coors[:num], coors)
        got = enc.out.astype(np.float32) * (1.0 if dtype == np.int8 else
                                            2.0**fix_pos)
        assert np.array_equal(got, ref), n
        assert (enc.table == -1).all()  # left clean for the next frame
        if n == 9000:
            assert total > max_voxels == num  # overflow counted, dropped


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 600),
       spread=st.floats(0.5, 30))
def test_voxelize_encode_fuzz(seed, n, spread):
    rng = np.random.default_rng(seed)
    pts = (rng.normal(0, spread, (n, 4))).astype(np.float32)
    decoration = dict(with_cluster_center=True, with_voxel_center=False,
                      with_distance=True)
    input_scale = [0.125, 0.125, 0.5, 1.0, 0.25, 0.25, 1.0, 0.0625]
    enc = _Encoder(64, 64, 4, decoration, input_scale, 4)
    num, _ = enc(pts)
    ref, coors = _reference(pts, 64, decoration, input_scale, 4, 64)
    assert np.array_equal(enc.coors[:num], coors)
    assert np.array_equal(enc.out.astype(np.float32), ref)


def _fake_quant(q, src, dst):
    """int8 on 2**-src -> float -> the input quantizer of 2**-dst (DPU
    input rounding: half away from zero, saturated)."""
    v = q.astype(np.float64) * 2.0**-src * 2.0**dst
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -128, 127)


@pytest.mark.parametrize('src,dst', [(4, 4), (4, 6), (6, 3), (2, 7)])
def test_requant_table_is_the_fake_quant_round_trip(src, dst):
    q = np.arange(-128, 128).astype(np.int8)
    table = kernels.requant_table(src, dst)
    assert np.array_equal(table[q.view(np.uint8)], _fake_quant(q, src, dst))
    assert table[0] == 0  # empty cells stay empty


@pytest.mark.parametrize('src,dst', [(5, 5), (5, 3)])
def test_scatter_rows_equals_scatter_pillars(src, dst):
    rng = np.random.default_rng(1)
    h, w, c = 12, 9, 6
    canvas = np.zeros((1, h, w, c), np.int8)
    flat = canvas.reshape(-1, c)
    written = np.zeros(h * w, np.int64)
    stamp = np.zeros(h * w, np.uint8)
    num_written = 0
    table = kernels.requant_table(src, dst)
    for frame, num in enumerate((40, 7, 0, 60, 60, 40), 1):
        cells = rng.choice(h * w, num, replace=num > h * w)
        if num == 60:  # a shared cell: the later pillar wins
            cells[5] = cells[2]
        coors = np.stack([np.zeros(num), cells // w, cells % w],
                         1).astype(np.int32)
        rows = rng.integers(-128, 128, (1, num + 3, 1, c)).astype(np.int8)
        num_written = kernels.scatter_rows(
            rows.reshape(num + 3, c), coors, num, w, table, src == dst, flat,
            written, num_written, stamp, frame)
        feats = _fake_quant(rows[0, :num, 0], src, dst)  # (num, C) values
        ref = glue.scatter_pillars(feats, coors, (h, w))  # (1, C, H, W)
        assert np.array_equal(canvas.transpose(0, 3, 1, 2), ref), num


def _boxes(rng, n, spread):
    b = np.zeros((n, 5))
    b[:, :2] = rng.uniform(-spread, spread, (n, 2))
    b[:, 2:4] = rng.uniform(0.3, 4.5, (n, 2))
    b[:, 4] = rng.uniform(-np.pi, np.pi, n)
    return b


def test_pair_iou_is_bit_identical():
    rng = np.random.default_rng(2)
    a = _boxes(rng, 3000, 10)
    b = a + rng.normal(0, 0.7, a.shape)
    b[:300] = a[:300]  # identical boxes
    b[300:400, 4] = a[300:400, 4] + np.pi / 2  # swapped sides
    ca, cb = np.empty((4, 2)), np.empty((4, 2))
    got = np.array([kernels.pair_iou(a[i], b[i], ca, cb)
                    for i in range(a.shape[0])])
    assert np.array_equal(got, glue._pair_iou(a, b))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 250),
       spread=st.floats(1, 40), thr=st.sampled_from([0.01, 0.1, 0.2, 0.5]),
       max_keep=st.integers(1, 300), dup=st.booleans())
def test_nms_rotated_sorted_equals_reference(seed, n, spread, thr, max_keep,
                                             dup):
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, n, spread)
    if dup and n > 1:
        boxes[n // 2:] = boxes[:n - n // 2]
    scores = rng.random(n).round(2)  # ties in score
    ref = glue.nms_rotated_bev(boxes, scores, thr, max_keep=max_keep)
    order = np.argsort(-scores, kind='stable')
    keep = np.empty(max(n, 1), np.int64)
    num = kernels.nms_rotated_sorted(np.ascontiguousarray(boxes[order]), thr,
                                     max_keep, keep)
    assert np.array_equal(order[keep[:num]], ref)


def test_best_logits_and_non_finite_maps():
    rng = np.random.default_rng(3)
    a, c, cells = 4, 3, 50
    cls = rng.normal(0, 2, (a * c, cells)).astype(np.float32)
    best = np.empty(a * cells, np.float32)
    above = np.empty(a * cells, np.int64)
    count, finite = kernels.best_logits(cls, a, c, 0.5, best, above)
    ref = cls.reshape(a, c, cells).max(axis=1).reshape(-1)
    assert finite and np.array_equal(best, ref)
    assert np.array_equal(above[:count], np.flatnonzero(ref > 0.5))
    cls[7, 11] = np.nan
    assert not kernels.best_logits(cls, a, c, 0.5, best, above)[1]
    pts = np.zeros((5, 4), np.float32)
    assert kernels.first_non_finite(pts) == -1
    pts[3, 2] = np.inf
    assert kernels.first_non_finite(pts) == 3
