"""The deploy runtime's numpy CPU glue against mmcv / mmdet3d references."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmdet3d_vitis  # noqa: F401  (registers the plugin)
from mmdet3d_vitis.deploy import (AnchorDecoder, DeployInputError,
                                  PointCloudError,
                                  ScatterCanvas, VoxelOverflowError,
                                  check_points, decorate_pillars,
                                  nms_rotated_bev, rotated_iou_bev,
                                  scatter_pillars, voxelize)
from mmdet3d_vitis.errors import UserInputError

from conftest import SMALL_PP_CONFIG as CONFIG

VOXEL = [0.5, 0.5, 8.0]
PCR = [-10.0, -10.0, -5.0, 10.0, 10.0, 3.0]  # 40 x 40 x 1 grid


def _cloud(rng, n, num_features=5, spread=12.0):
    pts = rng.uniform(-spread, spread, (n, num_features)).astype(np.float32)
    pts[:, 2] = rng.uniform(-6, 4, n)
    return pts


def _with_boundaries(rng, pts):
    """Put some points exactly on voxel and range boundaries."""
    n = pts.shape[0]
    idx = rng.choice(n, n // 5, replace=False)
    pts[idx[0::4], 0] = PCR[0]  # lower x boundary: inside
    pts[idx[1::4], 0] = PCR[3]  # upper x boundary: outside
    pts[idx[2::4], 1] = rng.integers(-20, 20, idx[2::4].size) * 0.5
    pts[idx[3::4], 2] = PCR[5]
    return pts


def _mmcv_voxelize(pts, max_points, max_voxels):
    from mmcv.ops import voxelization
    vox, coors, num = voxelization(
        torch.from_numpy(pts), VOXEL, PCR, max_points, max_voxels, True)
    return vox.numpy(), num.numpy(), coors.numpy()


# ---------------------------------------------------------------------------
# check_points


def test_check_points():
    pts = np.zeros((4, 5), np.float64)
    out = check_points(pts, 5)
    assert out.dtype == np.float32 and out.shape == (4, 5)
    assert check_points(np.empty(0), 5).shape == (0, 5)
    assert check_points(np.empty((0, 5)), 5).shape == (0, 5)
    with pytest.raises(PointCloudError, match='4 features.*expects 5'):
        check_points(np.zeros((3, 4)), 5)
    with pytest.raises(PointCloudError, match='2-D'):
        check_points(np.zeros(5), 5)
    bad = np.zeros((6, 5), np.float32)
    bad[1, 3] = np.nan
    bad[4, 0] = np.inf
    with pytest.raises(PointCloudError, match='2 of 6 points.*row 1'):
        check_points(bad, 5)
    kept, dropped = check_points(bad, 5, drop_invalid=True,
                                 return_num_dropped=True)
    assert kept.shape == (4, 5) and dropped == 2
    # beyond float32's range is inf after the conversion
    with pytest.raises(PointCloudError):
        check_points(np.full((1, 5), 1e300), 5)
    with pytest.raises(PointCloudError, match='numeric'):
        check_points(np.array([['a'] * 5]), 5)
    assert issubclass(PointCloudError, UserInputError)


# ---------------------------------------------------------------------------
# voxelize


@pytest.mark.parametrize('seed,n,max_points,max_voxels', [
    (0, 3000, 8, 2000),
    (1, 5000, 4, 300),  # overflow: later voxels dropped
    (2, 1, 8, 10),
    (3, 2000, 1, 5000),
])
def test_voxelize_matches_mmcv(seed, n, max_points, max_voxels):
    rng = np.random.default_rng(seed)
    pts = _with_boundaries(rng, _cloud(rng, n))
    # many points in a few voxels (max_points truncation)
    pts[:n // 10, :3] = rng.uniform(0, 0.4, (n // 10, 3))
    ref_vox, ref_num, ref_coors = _mmcv_voxelize(pts, max_points, max_voxels)
    vox, num, coors = voxelize(pts, VOXEL, PCR, max_points, max_voxels)
    assert vox.dtype == np.float32 and num.dtype == np.int32
    assert coors.dtype == np.int32
    np.testing.assert_array_equal(coors, ref_coors)
    np.testing.assert_array_equal(num, ref_num)
    np.testing.assert_array_equal(vox, ref_vox)


@pytest.mark.parametrize('voxel_size,pcr', [
    ([0.16, 0.16, 4], [0, -39.68, -3, 69.12, 39.68, 1]),  # KITTI
    ([0.3, 0.7, 0.15], [-3.3, -2.1, -1, 3.3, 2.1, 1.1]),
])
def test_voxelize_matches_mmcv_on_grid_lines(voxel_size, pcr):
    """Points snapped to voxel boundaries: float32 rounding must agree."""
    from mmcv.ops import voxelization
    rng = np.random.default_rng(21)
    n = 4000
    pts = rng.uniform(np.array(pcr[:3]) - 1, np.array(pcr[3:]) + 1, (n, 3))
    pts[:n // 2] = (rng.integers(-2, 450, (n // 2, 3)) * np.array(voxel_size)
                    + np.array(pcr[:3]))
    pts = np.concatenate([pts, rng.normal(size=(n, 1))], 1).astype(np.float32)
    ref = voxelization(torch.from_numpy(pts), voxel_size, pcr, 5, 3000, True)
    out = voxelize(pts, voxel_size, pcr, 5, 3000)
    for ours, theirs in zip((out[0], out[2], out[1]), ref):
        np.testing.assert_array_equal(ours, theirs.numpy())


def test_voxelize_empty_and_overflow():
    vox, num, coors = voxelize(np.zeros((0, 5), np.float32), VOXEL, PCR, 4,
                               10)
    assert vox.shape == (0, 4, 5) and num.shape == (0, ) and \
        coors.shape == (0, 3)
    # all points outside the range
    far = np.full((7, 5), 100.0, np.float32)
    assert voxelize(far, VOXEL, PCR, 4, 10)[0].shape == (0, 4, 5)
    rng = np.random.default_rng(5)
    pts = _cloud(rng, 2000)
    with pytest.raises(VoxelOverflowError, match='max_voxels=50'):
        voxelize(pts, VOXEL, PCR, 4, 50, on_overflow='error')
    assert voxelize(pts, VOXEL, PCR, 4, 5000, on_overflow='error')[0].shape[
        0] <= 1600
    with pytest.raises(UserInputError, match='on_overflow'):
        voxelize(pts, VOXEL, PCR, 4, 50, on_overflow='raise')
    with pytest.raises(UserInputError, match='max_points'):
        voxelize(pts, VOXEL, PCR, 0, 50)
    with pytest.raises(UserInputError, match='point_cloud_range'):
        voxelize(pts, VOXEL, [1, 1, 1, 0, 0, 0], 4, 50)


# ---------------------------------------------------------------------------
# decorate_pillars


@pytest.mark.parametrize('with_distance,scaled', [(False, False),
                                                  (True, True)])
def test_decorate_matches_point_decoration(with_distance, scaled):
    from mmdet3d.models.voxel_encoders import PillarFeatureNet

    from mmdet3d_vitis.quantization.partition import PointDecoration
    encoder = PillarFeatureNet(
        in_channels=5, feat_channels=[16], with_distance=with_distance,
        with_cluster_center=True, with_voxel_center=True, voxel_size=VOXEL,
        point_cloud_range=PCR, legacy=False)
    deco = PointDecoration(encoder)
    rng = np.random.default_rng(7)
    pts = _cloud(rng, 3000)
    vox, num, coors = voxelize(pts, VOXEL, PCR, 8, 2000)
    scale = None
    if scaled:
        scale = 2.0**rng.integers(-3, 3, deco.out_channels)
        deco.input_scale.copy_(torch.from_numpy(scale).float())
    coors4 = np.concatenate([np.zeros((len(coors), 1), np.int32), coors], 1)
    with torch.no_grad():
        ref = deco(torch.from_numpy(vox), torch.from_numpy(num),
                   torch.from_numpy(coors4)).numpy()
    out = decorate_pillars(vox, num, coors, VOXEL, PCR,
                           with_distance=with_distance, input_scale=scale)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert out.shape == (1, deco.out_channels, len(num), 8)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    with pytest.raises(UserInputError, match='num_points'):
        decorate_pillars(vox, num * 0, coors, VOXEL, PCR)


# ---------------------------------------------------------------------------
# scatter_pillars


def test_scatter_matches_pointpillars_scatter():
    from mmdet3d.models.middle_encoders import PointPillarsScatter
    rng = np.random.default_rng(3)
    h, w, c, m = 30, 40, 16, 500
    cells = rng.choice(h * w, m, replace=False)
    coors = np.stack([np.zeros(m), cells // w, cells % w], 1).astype(np.int32)
    feats = rng.normal(size=(m, c)).astype(np.float32)
    ref = PointPillarsScatter(c, [h, w])(
        torch.from_numpy(feats),
        torch.from_numpy(np.concatenate([np.zeros((m, 1)), coors],
                                        1).astype(np.int32)),
        batch_size=1).numpy()
    out = scatter_pillars(feats, coors, (h, w))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    # the pillar encoder's (1, C, M, 1) output is accepted as is
    np.testing.assert_array_equal(
        scatter_pillars(feats.T[None, :, :, None], coors, (h, w)), ref)
    # duplicates: the later pillar wins
    dup = np.concatenate([coors, coors[:3]])
    feats2 = np.concatenate([feats, feats[:3] + 100])
    out = scatter_pillars(feats2, dup, (h, w))
    np.testing.assert_array_equal(out[0, :, coors[0, 1], coors[0, 2]],
                                  feats[0] + 100)
    with pytest.raises(UserInputError, match='outside'):
        scatter_pillars(feats, coors, (h, w - 10))


def _random_frame(rng, h, w, c, m, dup=0, z=1):
    cells = rng.choice(h * w, m, replace=False)
    coors = np.stack([rng.integers(0, z, m), cells // w, cells % w],
                     1).astype(np.int32)
    if dup:
        coors = np.concatenate([coors, coors[rng.integers(0, m, dup)]])
        coors[m:, 0] = 0
    feats = rng.normal(size=(coors.shape[0], c)).astype(np.float32)
    return feats, coors


def test_scatter_canvas_equals_scatter_pillars_over_frames():
    rng = np.random.default_rng(5)
    h, w, c = 30, 40, 8
    canvas = ScatterCanvas(c, (h, w))
    first = canvas.canvas
    # shrinking, growing, disjoint, overlapping, duplicated, empty frames
    sizes = [(500, 0), (50, 0), (900, 0), (900, 0), (300, 40), (0, 0),
             (1, 0), (1200, 0), (200, 7)]
    prev = None
    for i, (m, dup) in enumerate(sizes):
        feats, coors = _random_frame(rng, h, w, c, max(m, 1) if dup else m,
                                     dup=dup)
        if i == 3:  # same cells as the last frame, new values
            feats = rng.normal(size=prev[0].shape).astype(np.float32)
            coors = prev[1]
        ref = scatter_pillars(feats, coors, (h, w))
        if i % 2:  # the pillar encoder's padded (1, C, N, 1) output
            enc = np.zeros((1, c, coors.shape[0] + 13, 1), np.float32)
            enc[0, :, :coors.shape[0], 0] = feats.T
            out = canvas(enc, coors)
        else:
            out = canvas(feats, coors)
        assert out is first and out.dtype == np.float32
        np.testing.assert_array_equal(out, ref)
        prev = (feats, coors)
    canvas.reset()
    assert not canvas.canvas.any()
    feats, coors = _random_frame(rng, h, w, c, 100)
    np.testing.assert_array_equal(canvas(feats, coors),
                                  scatter_pillars(feats, coors, (h, w)))


def test_scatter_canvas_matches_pointpillars_scatter_on_duplicates():
    from mmdet3d.models.middle_encoders import PointPillarsScatter
    rng = np.random.default_rng(7)
    h, w, c, m = 20, 24, 4, 200
    canvas = ScatterCanvas(c, (h, w))
    for _ in range(3):
        feats, coors = _random_frame(rng, h, w, c, m, dup=30, z=3)
        out = canvas(feats, coors)
        expected = scatter_pillars(feats, coors, (h, w))
        np.testing.assert_array_equal(out, expected)
        # the later pillar of a shared cell wins
        y, x = coors[-1, 1:]
        np.testing.assert_array_equal(out[0, :, y, x], feats[-1])
    # without duplicates it is bit-identical to mmdet3d
    feats, coors = _random_frame(rng, h, w, c, m)
    ref = PointPillarsScatter(c, [h, w])(
        torch.from_numpy(feats),
        torch.from_numpy(np.concatenate([np.zeros((m, 1)), coors],
                                        1).astype(np.int32)),
        batch_size=1).numpy()
    np.testing.assert_array_equal(canvas(feats, coors), ref)


def test_scatter_canvas_rejects_bad_input():
    canvas = ScatterCanvas(4, (10, 10))
    feats = np.ones((3, 4), np.float32)
    coors = np.zeros((3, 3), np.int32)
    with pytest.raises(UserInputError, match='channels'):
        canvas(np.ones((3, 5), np.float32), coors)
    with pytest.raises(UserInputError, match='outside'):
        canvas(feats, coors + 10)
    with pytest.raises(UserInputError, match='slots'):
        canvas(np.ones((1, 4, 2, 1), np.float32), coors)
    with pytest.raises(UserInputError, match='coors'):
        canvas(feats, np.zeros((2, 3), np.int32))
    with pytest.raises(UserInputError, match='grid_hw'):
        ScatterCanvas(4, (10, ))
    # a refused frame leaves the canvas as the last good frame left it
    good = canvas(feats, coors)
    np.testing.assert_array_equal(good, scatter_pillars(feats, coors,
                                                        (10, 10)))


def test_decorate_into_reused_buffer():
    rng = np.random.default_rng(11)
    pts = rng.uniform(-6, 6, (400, 4)).astype(np.float32)
    vox, num, coors = voxelize(pts, FUZZ_VOXEL, FUZZ_PCR, 5, 100)
    m = vox.shape[0]
    scale = rng.uniform(0.5, 2, 10).astype(np.float32)
    ref = decorate_pillars(vox, num, coors, FUZZ_VOXEL, FUZZ_PCR,
                           input_scale=scale)
    buf = np.full((1, 10, m + 7, 5), 42, np.float32)
    out = decorate_pillars(vox, num, coors, FUZZ_VOXEL, FUZZ_PCR,
                           input_scale=scale, out=buf)
    assert out is buf
    np.testing.assert_array_equal(buf[:, :, :m], ref)
    assert (buf[:, :, m:] == 42).all()  # untouched
    with pytest.raises(UserInputError, match='out must be'):
        decorate_pillars(vox, num, coors, FUZZ_VOXEL, FUZZ_PCR,
                         out=np.zeros((1, 10, m - 1, 5), np.float32))


# ---------------------------------------------------------------------------
# rotated IoU / NMS


def _random_bev_boxes(rng, n, spread=6.0):
    return np.stack([
        rng.uniform(-spread, spread, n),
        rng.uniform(-spread, spread, n),
        rng.uniform(0.3, 5, n),
        rng.uniform(0.3, 5, n),
        rng.uniform(-4, 4, n)
    ], 1).astype(np.float32)


def test_rotated_iou_matches_mmcv():
    from mmcv.ops import box_iou_rotated
    rng = np.random.default_rng(11)
    boxes = _random_bev_boxes(rng, 200)
    # identical, same-centre, axis-aligned touching and nested boxes
    boxes[1] = boxes[0]
    boxes[2] = [0, 0, 2, 2, 0]
    boxes[3] = [2, 0, 2, 2, 0]
    boxes[4] = [0, 0, 2, 2, np.pi / 2]
    boxes[5] = [0, 0, 1, 1, 0.3]
    boxes[6] = [0.5, 0.5, 1, 1, 0]
    ref = box_iou_rotated(torch.from_numpy(boxes),
                          torch.from_numpy(boxes)).numpy()
    ours = np.stack([rotated_iou_bev(b, boxes) for b in boxes])
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert ours[0, 1] == pytest.approx(1.0) and ours[2, 3] == 0
    assert ours[2, 4] == pytest.approx(1.0)


def test_nms_matches_mmcv():
    from mmcv.ops import nms_rotated
    rng = np.random.default_rng(12)
    boxes = _random_bev_boxes(rng, 800, spread=15)
    scores = rng.permutation(800).astype(np.float32) / 800
    for thr in (0.01, 0.2, 0.5):
        keep_ref = nms_rotated(torch.from_numpy(boxes),
                               torch.from_numpy(scores), thr)[1].numpy()
        np.testing.assert_array_equal(nms_rotated_bev(boxes, scores, thr),
                                      keep_ref)


@pytest.mark.parametrize('max_pairs', [0, None])
def test_nms_precomputed_pairs_equal_lazy_and_mmcv(monkeypatch, max_pairs):
    """Both NMS paths (pairs intersected up front, or lazily when there are
    too many) give mmcv's result, also with heavy overlap, equal scores and
    a max_keep cut; and nms_with_pairs on a subset equals NMS of it."""
    from mmcv.ops import nms_rotated
    from mmdet3d_vitis.deploy import glue
    if max_pairs is not None:
        monkeypatch.setattr(glue, '_MAX_PAIRS', max_pairs)
    rng = np.random.default_rng(3)
    for spread in (2, 15):
        boxes = _random_bev_boxes(rng, 400, spread=spread)
        # distinct scores for mmcv (its order of equal scores is its own)
        scores = rng.permutation(400).astype(np.float32) / 400
        for thr in (0.1, 0.5):
            keep_ref = nms_rotated(torch.from_numpy(boxes),
                                   torch.from_numpy(scores), thr)[1].numpy()
            np.testing.assert_array_equal(
                glue.nms_rotated_bev(boxes, scores, thr), keep_ref)
            np.testing.assert_array_equal(
                glue.nms_rotated_bev(boxes, scores, thr, max_keep=7),
                keep_ref[:7])
        # equal scores: both paths break ties by index (stable order)
        scores = (rng.integers(0, 40, 400) / 40).astype(np.float32)
        order = np.argsort(-scores, kind='stable')
        bx = boxes[order].astype(np.float64)
        radius = 0.5 * np.hypot(bx[:, 2], bx[:, 3])
        for thr in (0.1, 0.5):
            lazy = order[glue._greedy_lazy(bx, radius, thr, None)]
            np.testing.assert_array_equal(
                glue.nms_rotated_bev(boxes, scores, thr), lazy)
            pairs = glue.overlapping_pairs(boxes, thr)
            if pairs is None:
                continue
            subset = np.flatnonzero(rng.random(400) < 0.5)
            np.testing.assert_array_equal(
                glue.nms_with_pairs(scores[subset], pairs, subset=subset),
                subset[glue.nms_rotated_bev(boxes[subset], scores[subset],
                                            thr)])


def test_voxelize_into_a_reused_buffer_and_dense_vs_sparse(monkeypatch):
    """``out=`` (the Pipeline's reused buffer) gives the same voxels frame
    after frame (stale rows cleared), and the dense-table and sorted paths
    agree."""
    from mmdet3d_vitis.deploy import glue
    rng = np.random.default_rng(5)
    args = ([0.5, 0.5, 4], [-10, -10, -2, 10, 10, 2], 5, 300)
    buf = np.full((300, 5, 4), 7, np.float32)
    for n in (2000, 50, 3000, 0, 800):
        pts = rng.uniform(-11, 11, (n, 4)).astype(np.float32)
        ref = voxelize(pts, *args)
        got = voxelize(pts, *args, out=buf)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)
        monkeypatch.setattr(glue, '_DENSE_CELLS', 0)
        for a, b in zip(ref, voxelize(pts, *args)):
            np.testing.assert_array_equal(a, b)
        monkeypatch.undo()
    with pytest.raises(DeployInputError, match='out must be'):
        voxelize(pts, *args, out=np.zeros((10, 5, 4), np.float32))


def test_check_points_flags_only_non_finite_rows():
    # row sums that overflow to inf are not NaN/inf points
    big = np.full((3, 4), 3e38, np.float32)
    np.testing.assert_array_equal(check_points(big, 4), big)
    bad = big.copy()
    bad[1, 2] = np.nan
    with pytest.raises(PointCloudError, match='row 1'):
        check_points(bad, 4)
    assert check_points(bad, 4, drop_invalid=True).shape == (2, 4)


def test_quantize_input_matches_the_fake_quant_input_rounding():
    from mmdet3d_vitis.deploy.glue import quantize_input
    from mmdet3d_vitis.quantization.backends.dpu_arithmetic import \
        round_half_away
    rng = np.random.default_rng(0)
    for p in (0, 3, 7):
        x = rng.normal(0, 40 / 2**p, 5000).astype(np.float32)
        # exact ties, both signs, and values beyond the int8 range
        x[:200] = (rng.integers(-300, 300, 200) + 0.5) / 2**p
        x[200:210] = [0.49999997 / 2**p, -0.49999997 / 2**p, 127.5 / 2**p,
                      -128.5 / 2**p, 1e6, -1e6, 0, -0.0, 0.5 / 2**p,
                      -0.5 / 2**p]
        ref = torch.clamp(round_half_away(torch.from_numpy(x) * 2**p), -128,
                          127) / 2**p
        got = quantize_input(x.copy(), p)
        np.testing.assert_array_equal(got, ref.numpy())
        np.testing.assert_array_equal(
            quantize_input(x * np.float32(2.0**p), p, prescaled=True),
            ref.numpy())
        # idempotent: already on the grid
        np.testing.assert_array_equal(quantize_input(got.copy(), p), got)


# ---------------------------------------------------------------------------
# AnchorDecoder vs Anchor3DHead.predict_by_feat


@pytest.fixture(scope='module')
def small_head():
    from mmengine.config import Config

    from mmdet3d.registry import MODELS
    cfg = Config.fromfile(CONFIG)
    model = MODELS.build(cfg.model)
    head = model.pts_bbox_head.eval()
    return head, cfg.model.pts_bbox_head, cfg.model.test_cfg.pts


@pytest.mark.parametrize('seed,overrides', [
    (0, {}),  # the config's test_cfg: max_num=500 truncates
    (1, dict(max_num=5000, nms_thr=0.01)),  # ~650 boxes suppressed by NMS
    (11, dict(max_num=5000, nms_thr=0.5, nms_pre=3000, score_thr=0.2)),
])
def test_anchor_decoder_matches_anchor3d_head(small_head, seed, overrides):
    from mmengine.config import ConfigDict

    from mmdet3d.structures import LiDARInstance3DBoxes
    head, head_cfg, test_cfg = small_head
    test_cfg = ConfigDict({**test_cfg, **overrides})
    dec = AnchorDecoder.from_config(head_cfg, test_cfg)
    assert dec.num_anchors == head.num_anchors
    h = w = 50
    rng = np.random.default_rng(seed)
    a, c, k = head.num_anchors, head.num_classes, head.box_code_size
    cls = rng.normal(-4.0, 1.5, (1, a * c, h, w)).astype(np.float32)
    box = rng.normal(0, 0.5, (1, a * k, h, w)).astype(np.float32)
    dirs = rng.normal(0, 1, (1, a * 2, h, w)).astype(np.float32)
    # anchors equal mmdet3d's
    ref_anchors = head.prior_generator.grid_anchors(
        [(h, w)], device='cpu')[0].reshape(-1, k).numpy()
    np.testing.assert_allclose(dec.anchors((h, w)), ref_anchors, atol=1e-5)
    with torch.no_grad():
        ref = head.predict_by_feat(
            [torch.from_numpy(cls)], [torch.from_numpy(box)],
            [torch.from_numpy(dirs)],
            [dict(box_type_3d=LiDARInstance3DBoxes)],
            cfg=test_cfg)[0]
    out = dec(cls, box, dirs)
    ref_boxes = ref.bboxes_3d.tensor.numpy()
    ref_scores = ref.scores_3d.numpy()
    ref_labels = ref.labels_3d.numpy()
    assert len(ref_scores) > 20  # the test exercises thresholds and NMS
    assert out['bboxes'].shape == ref_boxes.shape
    # float32 sigmoids collide: equal (score, label) pairs are ordered by x
    o1 = np.lexsort((np.round(out['bboxes'][:, 0], 3), out['labels'],
                     -out['scores']))
    o2 = np.lexsort((np.round(ref_boxes[:, 0], 3), ref_labels, -ref_scores))
    np.testing.assert_array_equal(out['labels'][o1], ref_labels[o2])
    np.testing.assert_allclose(out['scores'][o1], ref_scores[o2], atol=1e-4)
    np.testing.assert_allclose(out['bboxes'][o1], ref_boxes[o2], atol=1e-4)


@pytest.mark.parametrize('nms_pre', [-1, 100000])
def test_anchor_decoder_nhwc_int8_equals_nchw_float(small_head, nms_pre):
    """The runtime decodes the DPU's int8 NHWC head maps: same result as
    the float NCHW maps they dequantize to."""
    from mmengine.config import ConfigDict
    _, head_cfg, test_cfg = small_head
    dec = AnchorDecoder.from_config(
        head_cfg, ConfigDict({**test_cfg, 'nms_pre': nms_pre}))
    h, w = 20, 30
    rng = np.random.default_rng(5)
    a, c, k = dec.num_anchors, dec.num_classes, dec.box_code_size
    scales = (2.0**-3, 2.0**-5, 2.0**-4)
    maps_q = [rng.integers(lo, hi, (1, h, w, a * n)).astype(np.int8)
              for (lo, hi), n in zip([(-90, -10), (-40, 40), (-60, 60)],
                                     (c, k, 2))]
    maps_f = [(q.astype(np.float32) * np.float32(s)).transpose(0, 3, 1, 2)
              for q, s in zip(maps_q, scales)]
    ref = dec(*maps_f)
    out = dec(*maps_q, layout='NHWC', scales=scales)
    assert 20 < len(ref['scores']) <= dec.max_num
    for key in ('bboxes', 'scores', 'labels'):
        np.testing.assert_array_equal(out[key], ref[key])
    with pytest.raises(UserInputError, match='NHWC'):
        dec(*maps_f, layout='NHWC')  # NCHW maps passed as NHWC
    with pytest.raises(UserInputError, match='layout'):
        dec(*maps_q, layout='CHW')


def test_anchor_decoder_rejects_bad_maps(small_head):
    _, head_cfg, test_cfg = small_head
    dec = AnchorDecoder.from_config(head_cfg, test_cfg)
    with pytest.raises(UserInputError, match='cls_score'):
        dec(np.zeros((1, 3, 5, 5)), np.zeros((1, 126, 5, 5)),
            np.zeros((1, 28, 5, 5)))
    with pytest.raises(UserInputError, match='NaN or inf'):
        dec(np.full((140, 4, 4), np.nan), np.zeros((126, 4, 4)),
            np.zeros((28, 4, 4)))
    empty = dec(np.full((140, 4, 4), -20.0), np.zeros((126, 4, 4)),
                np.zeros((28, 4, 4)))
    assert empty['bboxes'].shape == (0, 9) and empty['labels'].shape == (0, )


# ---------------------------------------------------------------------------
# fuzz: check_points -> voxelize -> decorate -> scatter

FUZZ_PCR = [-4.0, -4.0, -2.0, 4.0, 4.0, 2.0]
FUZZ_VOXEL = [0.5, 0.5, 4.0]  # 16 x 16 x 1
_FUZZ_CANVAS = ScatterCanvas(10, (16, 16))


@st.composite
def clouds(draw):
    n = draw(st.integers(0, 120))
    kind = draw(st.sampled_from(['uniform', 'one_voxel', 'wide', 'tiny']))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == 'uniform':
        pts = rng.uniform(-6, 6, (n, 4))
    elif kind == 'one_voxel':
        pts = np.tile(rng.uniform(0, 0.5, (1, 4)), (n, 1))
    elif kind == 'wide':
        pts = rng.choice([-1e30, -1e6, -4.0, 4.0, 0.0, 1e6, 1e30, 3.9999],
                         (n, 4))
    else:
        pts = rng.uniform(-1e-30, 1e-30, (n, 4))
    if n and draw(st.booleans()):
        rows = rng.integers(0, n, draw(st.integers(1, 3)))
        pts[rows, rng.integers(0, 4, rows.size)] = rng.choice(
            [np.nan, np.inf, -np.inf, 1e300], rows.size)
    return pts


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(clouds(), st.booleans(), st.integers(1, 5), st.integers(1, 40))
def test_fuzz_glue_pipeline(pts, drop_invalid, max_points, max_voxels):
    try:
        checked = check_points(pts, 4, drop_invalid=drop_invalid)
    except PointCloudError:
        with np.errstate(over='ignore'):
            assert not drop_invalid and not np.isfinite(
                pts.astype(np.float32)).all()
        return
    assert np.isfinite(checked).all() and checked.shape[1] == 4
    vox, num, coors = voxelize(checked, FUZZ_VOXEL, FUZZ_PCR, max_points,
                               max_voxels)
    m = vox.shape[0]
    assert vox.shape == (m, max_points, 4) and m <= max_voxels
    assert num.shape == (m, ) and coors.shape == (m, 3)
    assert m == 0 or (num.min() >= 1 and num.max() <= max_points)
    assert np.all((coors >= 0) & (coors < [1, 16, 16]))
    feats = decorate_pillars(vox, num, coors, FUZZ_VOXEL, FUZZ_PCR)
    assert feats.shape == (1, 10, m, max_points)
    assert np.isfinite(feats).all()
    canvas = scatter_pillars(feats[0, :, :, 0].T, coors, (16, 16))
    assert canvas.shape == (1, 10, 16, 16) and np.isfinite(canvas).all()
    # one canvas across all examples: stale cells of earlier ones cleared
    np.testing.assert_array_equal(
        _FUZZ_CANVAS(feats[0, :, :, 0].T, coors), canvas)
    try:
        voxelize(checked, FUZZ_VOXEL, FUZZ_PCR, max_points, max_voxels,
                 on_overflow='error')
    except VoxelOverflowError:
        assert m == max_voxels


def test_anchors_at_equals_the_full_table(small_head):
    """The decoder builds only the anchors it decodes: the same float32
    values as the full table (several ranges and sizes per range)."""
    _, head_cfg, test_cfg = small_head
    dec = AnchorDecoder.from_config(head_cfg, test_cfg)
    rng = np.random.default_rng(4)
    for hw in ((50, 50), (7, 13)):
        table = dec.anchors(hw)
        index = rng.integers(0, table.shape[0], 500)
        np.testing.assert_array_equal(dec.anchors_at(hw, index),
                                      table[index])
