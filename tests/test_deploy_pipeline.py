"""The deploy folder (tools/quant.py --quant_mode test --dump_xmodel) and
mmdet3d_vitis.deploy.Pipeline against the PyTorch int8 partitioned model.

A random-weight small PointPillars (seeded, as in test_quant_tool.py) is
calibrated with the builtin backend on the tiny synthetic set, then
``--quant_mode test --dump_xmodel`` writes the deploy folder.  On the first
test frame (the test pipeline's points) the Pipeline's detections are
compared with the int8 model's ``predict``: the ONNX graphs round ties to
even where the fake-quant modules round half up, so a few boxes may differ;
what is asserted is stated in ``test_pipeline_matches_int8_model``.
"""
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate

import mmdet3d_vitis  # noqa: F401  (registers the plugin)
from mmdet3d_vitis.deploy import (ManifestError, Pipeline, PointCloudError,
                                  STAGES, load_manifest, rotated_iou_bev)
from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.quantization.quant_runner import (build_dataset,
                                                     eval_dataset_cfg,
                                                     load_float_detector,
                                                     load_quant_config,
                                                     load_test_model)

from conftest import (SMALL_PP_CONFIG, quant_test_options,
                      save_random_small_checkpoint)

# Of the int8 model's detections, the TOP_K highest-scoring must have a
# Pipeline detection of the same label within CENTRE_TOL metres or with BEV
# IoU >= IOU_MIN, for at least MIN_MATCH of them.
TOP_K = 20
CENTRE_TOL = 1e-2
IOU_MIN = 0.99
MIN_MATCH = 0.8


@pytest.fixture(scope='module')
def options(tiny_synthetic_root):
    return quant_test_options(tiny_synthetic_root)


@pytest.fixture(scope='module')
def random_checkpoint(tmp_path_factory):
    return save_random_small_checkpoint(
        str(tmp_path_factory.mktemp('ckpt') / 'random.pth'),
        spread_cls_scores=True)


@pytest.fixture(scope='module')
def deployed(quant_tool, random_checkpoint, options, tmp_path_factory):
    root = tmp_path_factory.mktemp('deploy')
    quant_dir = str(root / 'quantize_result')
    quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'calib',
        '--calib_len', '4', '--calib_sample_method', 'sequential',
        '--quant_dir', quant_dir, '--backend', 'builtin', '--cfg-options',
        *options
    ])
    report = quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'test',
        '--dump_xmodel', '--quant_dir', quant_dir, '--backend', 'builtin',
        '--work-dir', str(root / 'work'), '--cfg-options', *options
    ])
    return quant_dir, osp.join(quant_dir, 'deploy'), report


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
    assert (m['format'], m['version']) == ('mmdet3d_vitis.pipeline', 1)
    assert [s['name'] for s in m['subgraphs']] == ['pillar_encoder', 'bev']
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
    n_ref = ref['scores'].shape[0]
    print(f'int8 torch: {n_ref} detections, pipeline: '
          f'{out["scores"].shape[0]}')
    assert n_ref > 0
    top = np.argsort(-ref['scores'], kind='stable')[:TOP_K]
    matched = 0
    for i in top:
        same = np.flatnonzero(out['labels'] == ref['labels'][i])
        if same.size == 0:
            continue
        cand = out['bboxes'][same]
        dist = np.linalg.norm(cand[:, :3] - ref['bboxes'][i, :3], axis=1)
        iou = rotated_iou_bev(ref['bboxes'][i, [0, 1, 3, 4, 6]],
                              cand[:, [0, 1, 3, 4, 6]])
        if (dist < CENTRE_TOL).any() or (iou >= IOU_MIN).any():
            matched += 1
    print(f'matched {matched} of the top {len(top)} int8 detections')
    assert matched >= MIN_MATCH * len(top)


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
    bad = dict(good, version=2)
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match='version'):
        load_manifest(str(dst))
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


def test_dump_xmodel_replaces_an_existing_deploy_dir(
        quant_tool, deployed, random_checkpoint, options, tmp_path):
    quant_dir, _, _ = deployed
    target = tmp_path / 'out'
    target.mkdir()
    (target / 'stale.txt').write_text('old')
    quant_tool.main([
        SMALL_PP_CONFIG, random_checkpoint, '--quant_mode', 'test',
        '--dump_xmodel', '--deploy_dir', str(target), '--quant_dir',
        quant_dir, '--backend', 'builtin', '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *options
    ])
    assert sorted(os.listdir(target)) == [
        'bev_int.onnx', 'pillar_encoder_int.onnx', 'pipeline.json']
    assert sorted(os.listdir(tmp_path)) == ['out', 'work']
