"""The deploy folder (tools/quant.py --quant_mode test --dump_xmodel) and
mmdet3d_vitis.deploy.Pipeline against the PyTorch int8 partitioned model.

A random-weight small PointPillars (seeded, as in test_quant_tool.py) is
calibrated with the builtin backend on the tiny synthetic set, then
``--quant_mode test --dump_xmodel`` writes the deploy folder.  On the first
test frame (the test pipeline's points) the Pipeline's detections are
compared with the int8 model's ``predict`` (same boxes; only the order of
equal int8 scores may differ: ``match_detections``).
"""
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmengine.dataset import pseudo_collate

import mmdet3d_vitis  # noqa: F401  (registers the plugin)
from mmdet3d_vitis.deploy import (ManifestError, Pipeline, PointCloudError,
                                  STAGES, load_manifest)
from mmdet3d_vitis.deploy.detection_match import match_detections
from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.quantization.quant_runner import (build_dataset,
                                                     eval_dataset_cfg,
                                                     load_float_detector,
                                                     load_quant_config,
                                                     load_test_model)

from conftest import SMALL_PP_CONFIG

# share of the int8 model's boxes the Pipeline must reproduce exactly (the
# rest may only differ by the order of equal scores)
MIN_MATCH = 0.9


@pytest.fixture(scope='module')
def shared(shared_deploy):
    return shared_deploy


@pytest.fixture(scope='module')
def options(shared):
    return shared[4]


@pytest.fixture(scope='module')
def random_checkpoint(shared):
    return shared[3]


@pytest.fixture(scope='module')
def deployed(shared):
    return shared[:3]


@pytest.fixture(scope='module')
def frame_and_int8(quant_tool, deployed, random_checkpoint, options):
    quant_dir, _, _ = deployed
    opts = quant_tool.options_from_args(quant_tool.parse_args([
        SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'test',
        '--quant_dir', quant_dir, '--backend', 'builtin', '--cfg-options',
        *options
    ]))
    cfg = load_quant_config(opts)
    detector = load_float_detector(cfg, random_checkpoint)
    qmodel, _, _ = load_test_model(opts, detector)
    dataset = build_dataset(eval_dataset_cfg(cfg))
    sample = dataset[0]
    batch = pseudo_collate([sample])
    with torch.no_grad():
        data = qmodel.model.data_preprocessor(batch, False)
        pred = qmodel.model.predict(data['inputs'], data['data_samples'])
    inst = pred[0].pred_instances_3d
    ref = dict(bboxes=inst.bboxes_3d.tensor.numpy(),
               scores=inst.scores_3d.numpy(), labels=inst.labels_3d.numpy())
    return sample['inputs']['points'].numpy(), ref


def test_deploy_folder_and_manifest(deployed):
    quant_dir, deploy_dir, report = deployed
    assert report['deploy_dir'] == osp.abspath(deploy_dir)
    assert sorted(os.listdir(deploy_dir)) == [
        'bev_int.onnx', 'pillar_encoder_int.onnx', 'pipeline.json']
    # no staging leftovers next to it
    assert not [n for n in os.listdir(quant_dir) if 'staging' in n]
    m = load_manifest(deploy_dir)
    assert (m['format'], m['version']) == ('mmdet3d_vitis.pipeline', 2)
    assert [s['name'] for s in m['subgraphs']] == ['pillar_encoder', 'bev']
    # the DPU's int8 boundaries: pillars in, NHWC rows out, NHWC canvas in
    enc, bev = m['subgraphs']
    forms = [(t['dtype'], t['layout'], t['shape']) for t in
             (enc['inputs'][0], enc['outputs'][0], bev['inputs'][0])]
    assert forms == [('int8', 'NCHW', [1, 11, 20000, 32]),
                     ('int8', 'NHWC', [1, 20000, 1, 32]),
                     ('int8', 'NHWC', [1, 200, 200, 32])]
    assert all((o['dtype'], o['layout']) == ('int8', 'NHWC')
               for o in bev['outputs'])
    assert m['voxelization']['voxel_size'] == [0.5, 0.5, 8.0]
    assert m['voxelization']['max_num_points'] == 32
    assert m['voxelization']['max_voxels'] == 20000
    assert m['scatter']['grid_hw'] == [200, 200]
    assert m['points']['num_features'] == 5
    with open(osp.join(quant_dir, 'calib.json')) as f:
        rng = json.load(f)['pillar_input_range']
    assert m['decoration']['input_scale'] == [1.0 / r for r in rng]
    for sub in m['subgraphs']:
        for t in sub['inputs'] + sub['outputs']:
            assert t['scale'] == 2.0**-t['fix_pos']
    assert [o['role'] for o in m['head']['outputs']] == [
        'cls_score', 'bbox_pred', 'dir_cls_pred']
    assert m['test_cfg']['nms_pre'] == 100 and m['test_cfg']['max_num'] == 50


def test_pipeline_matches_int8_model(deployed, frame_and_int8):
    _, deploy_dir, _ = deployed
    points, ref = frame_and_int8
    pipeline = Pipeline(deploy_dir)
    out = pipeline(points)
    assert set(pipeline.stage_times) == set(STAGES)
    assert all(t >= 0 for t in pipeline.stage_times.values())
    assert out['bboxes'].shape[1] == ref['bboxes'].shape[1] == 9
    assert out['bboxes'].dtype == np.float32
    assert out['labels'].dtype == np.int64
    # the deploy check's rule (tests/test_deploy_check.py): same boxes,
    # IoU >= 0.99, only score-tie order may differ
    m = match_detections(ref, out)
    print(dict(m))
    assert m['n_ref'] > 0 and m['ok'], m
    assert m['n_matched'] >= MIN_MATCH * m['n_ref'] and m['min_iou'] >= 0.99


def test_empty_cloud_gives_empty_result(deployed):
    pipeline = Pipeline(deployed[1])
    for empty in (np.zeros((0, 5), np.float32), np.zeros(0),
                  np.full((3, 5), 1000.0, np.float32)):  # all out of range
        out = pipeline(empty)
        assert out['bboxes'].shape == (0, 9)
        assert out['scores'].shape == (0, ) and out['labels'].shape == (0, )


def test_wrong_point_width_is_refused(deployed):
    pipeline = Pipeline(deployed[1])
    with pytest.raises(PointCloudError, match='expects 5'):
        pipeline(np.zeros((10, 4), np.float32))


def _copy(deployed, tmp_path):
    dst = tmp_path / 'deploy'
    shutil.copytree(deployed[1], dst)
    return dst


def test_missing_or_corrupt_manifest(deployed, tmp_path):
    dst = _copy(deployed, tmp_path)
    (dst / 'pipeline.json').write_text('{"format": ')
    with pytest.raises(ManifestError, match='not valid JSON'):
        Pipeline(str(dst))
    (dst / 'pipeline.json').unlink()
    with pytest.raises(ManifestError, match='not a deploy folder'):
        Pipeline(str(dst))
    with pytest.raises(ManifestError):
        Pipeline(str(tmp_path / 'nowhere'))


def test_manifest_version_and_keys_are_checked(deployed, tmp_path):
    dst = _copy(deployed, tmp_path)
    path = dst / 'pipeline.json'
    good = json.loads(path.read_text())
    for version in (1, 3):  # 1: float boundaries, from an older export
        path.write_text(json.dumps(dict(good, version=version)))
        with pytest.raises(ManifestError, match='version.*re-export'):
            load_manifest(str(dst))
    bad = json.loads(json.dumps(good))
    bad['subgraphs'][1]['inputs'][0]['layout'] = 'NWHC'
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match='layout'):
        load_manifest(str(dst))
    # a float canvas input (valid manifest) is not what the runtime writes
    bad['subgraphs'][1]['inputs'][0].update(layout='NCHW', dtype='float32')
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match='bev input is float32 NCHW'):
        Pipeline(str(dst))
    bad = json.loads(json.dumps(good))
    del bad['voxelization']['max_voxels']
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match='max_voxels'):
        load_manifest(str(dst))
    bad = json.loads(json.dumps(good))
    del bad['test_cfg']
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match='test_cfg'):
        load_manifest(str(dst))
    assert issubclass(ManifestError, UserInputError)


def test_missing_or_corrupt_onnx(deployed, tmp_path):
    dst = _copy(deployed, tmp_path)
    (dst / 'bev_int.onnx').write_bytes(b'not an onnx model')
    with pytest.raises(ManifestError, match='bev_int.onnx'):
        Pipeline(str(dst))
    (dst / 'bev_int.onnx').unlink()
    with pytest.raises(ManifestError, match='bev_int.onnx.*missing'):
        Pipeline(str(dst))


def test_xmodel_deploy_folder_is_refused_clearly(deployed, tmp_path):
    """A deploy folder exported by nndct (xmodel subgraphs, no fix
    positions in pipeline.json: they live in the xmodel) is valid but runs
    on the board, not in the onnxruntime Pipeline."""
    dst = _copy(deployed, tmp_path)
    manifest = json.loads((dst / 'pipeline.json').read_text())
    for sub in manifest['subgraphs']:
        xmodel = sub['file'].replace('.onnx', '.xmodel')
        (dst / sub['file']).rename(dst / xmodel)
        sub['file'] = xmodel
        for t in sub['inputs'] + sub['outputs']:
            t['fix_pos'] = t['scale'] = None
    (dst / 'pipeline.json').write_text(json.dumps(manifest))
    assert load_manifest(str(dst))['subgraphs'][0]['file'].endswith(
        '.xmodel')
    with pytest.raises(ManifestError, match='VART'):
        Pipeline(str(dst))


def test_dump_xmodel_replaces_an_existing_deploy_dir(
        quant_tool, deployed, random_checkpoint, options, tmp_path):
    quant_dir, _, _ = deployed
    target = tmp_path / 'out'
    target.mkdir()
    (target / 'stale.txt').write_text('old')
    quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'test',
        '--dump_xmodel', '--deploy_check_frames', '0',
        '--deploy_dir', str(target), '--quant_dir',
        quant_dir, '--backend', 'builtin', '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *options
    ])
    assert sorted(os.listdir(target)) == [
        'bev_int.onnx', 'pillar_encoder_int.onnx', 'pipeline.json']
    assert sorted(os.listdir(tmp_path)) == ['out', 'work']


# ---------------------------------------------------------------------------
# the Pipeline on arbitrary clouds


def assert_well_formed(out, pipeline):
    """Consistent shapes / dtypes, finite boxes, labels in range."""
    assert set(out) == {'bboxes', 'scores', 'labels'}
    k = out['scores'].shape[0]
    code = pipeline.decoder.box_code_size
    assert out['bboxes'].shape == (k, code)
    assert out['scores'].shape == (k, ) and out['labels'].shape == (k, )
    assert out['bboxes'].dtype == np.float32
    assert out['scores'].dtype == np.float32
    assert out['labels'].dtype == np.int64
    assert np.isfinite(out['bboxes']).all()
    assert np.isfinite(out['scores']).all()
    assert ((out['scores'] >= 0) & (out['scores'] <= 1)).all()
    assert ((out['labels'] >= 0) &
            (out['labels'] < len(pipeline.class_names))).all()
    assert (out['bboxes'][:, 3:6] >= 0).all()
    assert k <= pipeline.manifest['test_cfg']['max_num']


@pytest.fixture(scope='module')
def pipelines(deployed):
    """A Pipeline per drop_invalid setting (ONNX sessions built once)."""
    return {flag: Pipeline(deployed[1], num_threads=1, drop_invalid=flag)
            for flag in (False, True)}


def _random_cloud(seed, n, width, frac_out, n_bad, pcr):
    rng = np.random.RandomState(seed)
    lo, hi = np.asarray(pcr[:3]), np.asarray(pcr[3:])
    pts = rng.uniform(lo, hi, size=(n, 3))
    out = rng.rand(n) < frac_out
    span = hi - lo
    pts[out] = rng.uniform(lo - 2 * span, hi + 2 * span, size=(out.sum(), 3))
    extra = rng.rand(n, max(width - 3, 0))
    cloud = np.concatenate([pts, extra], 1)[:, :width]
    if n and n_bad:
        rows = rng.choice(n, min(n_bad, n), replace=False)
        cols = rng.randint(0, width, size=rows.shape[0])
        cloud[rows, cols] = rng.choice([np.nan, np.inf, -np.inf],
                                       size=rows.shape[0])
    dtype = rng.choice([np.float32, np.float64])
    return cloud.astype(dtype)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 3000),
       width=st.sampled_from([5, 5, 5, 5, 3, 4, 6]),
       frac_out=st.sampled_from([0.0, 0.3, 1.0]),
       n_bad=st.sampled_from([0, 0, 1, 17]), drop_invalid=st.booleans())
def test_pipeline_fuzz_random_clouds(pipelines, seed, n, width, frac_out,
                                     n_bad, drop_invalid):
    pipeline = pipelines[drop_invalid]
    cloud = _random_cloud(seed, n, width, frac_out, n_bad,
                          pipeline.point_cloud_range)
    try:
        out = pipeline(cloud)
    except UserInputError as exc:
        # only the refusals a user can cause by these clouds
        assert isinstance(exc, PointCloudError), repr(exc)
        assert width != 5 or (n_bad and not drop_invalid), repr(exc)
        return
    assert width == 5 and (n == 0 or not n_bad or drop_invalid)
    assert_well_formed(out, pipeline)


def test_pipeline_fuzz_odd_inputs(pipelines):
    """Not-an-array / wrong-rank / non-numeric inputs are refused cleanly."""
    pipeline = pipelines[False]
    for bad in (np.zeros((4, 5, 1), np.float32), np.zeros(5, np.float32),
                np.array([['a'] * 5] * 3), [[1, 2, 3, 4, 'x']], None,
                np.zeros((3, 5), np.complex64)):
        with pytest.raises(UserInputError):
            pipeline(bad)
    # lists and ints are numbers too
    assert_well_formed(pipeline([[0.5, 0.5, 0.0, 1, 0]] * 3), pipeline)
    assert_well_formed(pipeline(np.ones((7, 5), np.int32)), pipeline)


def _one_point_per_pillar(pipeline, count, seed=0):
    """``count`` points, each in its own pillar of the BEV grid."""
    x0, y0, z0, x1, y1, z1 = pipeline.point_cloud_range
    vx, vy = pipeline.voxel_size[:2]
    h, w = pipeline.grid_hw
    assert count <= h * w
    cells = np.random.RandomState(seed).choice(h * w, count, replace=False)
    pts = np.zeros((count, pipeline.num_features), np.float32)
    pts[:, 0] = x0 + (cells % w + 0.5) * vx
    pts[:, 1] = y0 + (cells // w + 0.5) * vy
    pts[:, 2] = (z0 + z1) / 2
    return pts


def test_voxel_overflow_error_or_drop(deployed):
    from mmdet3d_vitis.deploy import VoxelOverflowError
    strict = Pipeline(deployed[1], num_threads=1, on_overflow='error')
    cloud = _one_point_per_pillar(strict, strict.max_voxels + 500)
    with pytest.raises(VoxelOverflowError, match='max_voxels'):
        strict(cloud)
    assert issubclass(VoxelOverflowError, UserInputError)
    # exactly max_voxels pillars is fine in either mode
    assert_well_formed(strict(cloud[:strict.max_voxels]), strict)
    lenient = Pipeline(deployed[1], num_threads=1, on_overflow='drop')
    assert_well_formed(lenient(cloud), lenient)


def test_scatter_over_many_frames_equals_a_fresh_canvas(pipelines):
    """The reused int8 NHWC canvas after frame after frame (past the
    cell stamps' wrap-around at 255) equals a fresh scatter of the last
    frame's rows, requantized from the encoder's scale to the BEV input's
    as the fake-quant model does."""
    from mmdet3d_vitis.deploy.glue import scatter_pillars
    from mmdet3d_vitis.deploy.kernels import requant_table
    pipeline = pipelines[False]
    height, width = pipeline.grid_hw
    channels = pipeline._canvas.shape[3]
    table = requant_table(*pipeline._requant)
    rng = np.random.default_rng(0)
    for frame in range(300):
        num = int(rng.integers(0, 400))
        cells = rng.choice(height * width, num, replace=False)
        coors = np.stack([np.zeros(num), cells // width, cells % width],
                         1).astype(np.int32)
        rows = rng.integers(-128, 128, (1, pipeline.num_voxels, 1, channels),
                            dtype=np.int8)
        canvas = pipeline.scatter(rows, coors)
        if frame % 37 == 0 or frame > 290:
            want = scatter_pillars(
                table[rows[0, :num, 0].view(np.uint8)].astype(np.float32),
                coors, (height, width))
            np.testing.assert_array_equal(
                canvas.transpose(0, 3, 1, 2).astype(np.float32), want)
    with pytest.raises(UserInputError, match='do not fit'):
        pipeline.scatter(rows[:, :, :, :3], coors)
