"""Deploy check (issue #4): the deploy folder written by ``tools/quant.py
--quant_mode test --dump_xmodel`` reproduces the PyTorch int8 model.

A seeded random-weight small PointPillars (classification weights spread
so scores differ) is calibrated with the builtin backend on the tiny
synthetic set and exported.  Asserted, on synthetic test frames (through
the tool, QUANT_DIR/deploy_check.json) and on the real nuScenes frame in
../shared/data/nuscenes_demo:

* every DPU subgraph output within 1 LSB of the fake-quant model (the tie
  offsets make activations round half up like the DPU, so in practice 0);
* the Pipeline's detections are the int8 model's: same label, BEV IoU >=
  0.99, same score, except boxes whose score another box shares (tie
  order), and at least 90% of the boxes matched.
"""
import glob
import json
import os.path as osp

import numpy as np
import pytest

import mmdet3d_vitis  # noqa: F401
from mmdet3d_vitis.deploy.detection_match import match_detections
from mmdet3d_vitis.quantization.deploy_check import (DEPLOY_CHECK_FILE,
                                                     run_deploy_check)
from mmdet3d_vitis.quantization.quant_runner import (build_dataset,
                                                     eval_dataset_cfg,
                                                     load_float_detector,
                                                     load_quant_config,
                                                     load_test_model)

from conftest import (SMALL_PP_CONFIG, make_deploy_folder,
                      quant_test_options, save_random_small_checkpoint)

MIN_MATCHED = 0.9


@pytest.fixture(scope='module')
def exported(quant_tool, tiny_synthetic_root, tmp_path_factory):
    root = tmp_path_factory.mktemp('deploy_check')
    ckpt = save_random_small_checkpoint(str(root / 'random.pth'),
                                        spread_cls_scores=True)
    quant_dir, _, report, _, options = make_deploy_folder(
        ckpt, quant_test_options(tiny_synthetic_root), root, check_frames=2)
    return dict(ckpt=ckpt, quant_dir=quant_dir, report=report,
                options=options, quant_tool=quant_tool)


def assert_detections_match(matches):
    for m in matches:
        assert m['n_ref'] > 0, m
        assert m['unexplained_ref'] == 0 and m['unexplained_out'] == 0, m
        assert m['n_matched'] >= MIN_MATCHED * m['n_ref'], m
        assert m['min_iou'] >= 0.99, m


def test_tool_writes_a_passing_deploy_check(exported):
    report = exported['report']
    summary = report['deploy_check']
    assert summary['ok'] and summary['detections_matched']
    assert summary['frames'] == [0, 1]
    assert summary['max_abs_lsb'] <= 1
    path = osp.join(exported['quant_dir'], DEPLOY_CHECK_FILE)
    assert summary['file'] == osp.abspath(path)
    with open(path) as f:
        check = json.load(f)
    assert set(check['subgraphs']) == {'pillar_encoder', 'bev'}
    for name, sub in check['subgraphs'].items():
        assert sub['frames'] == 2
        for row in sub['vs_dpu']:
            assert row['max_abs_lsb'] <= 1, (name, row)
            assert 0 <= row['share_differ'] <= 1
        # every BEV activation lies on a known grid: its ties are corrected
        if name == 'bev':
            assert sub['n_uncorrected'] == 0
            assert all(t['tie_corrected'] for t in sub['ties']
                       if t['kind'] == 'act')
            assert all(r['max_abs_lsb'] == 0 for r in sub['vs_dpu'])
    assert_detections_match(check['detections'])


def test_real_nuscenes_frame_end_to_end(exported, nuscenes_demo_dir):
    tool = exported['quant_tool']
    opts = tool.options_from_args(tool.parse_args([
        SMALL_PP_CONFIG, exported['ckpt'], '--quant_mode', 'test',
        '--quant_dir', exported['quant_dir'], '--backend', 'builtin',
        '--cfg-options', *exported['options']
    ]))
    cfg = load_quant_config(opts)
    qmodel, _, _ = load_test_model(
        opts, load_float_detector(cfg, exported['ckpt']))
    ds_cfg = eval_dataset_cfg(cfg)
    ds_cfg.update(data_root=nuscenes_demo_dir + '/',
                  ann_file=glob.glob(osp.join(nuscenes_demo_dir,
                                              '*.pkl'))[0],
                  data_prefix=dict(pts='', img='', sweeps=''))
    real = build_dataset(ds_cfg)
    assert len(real) == 1 and len(real[0]['inputs']['points']) > 30000
    deploy_dir = osp.join(exported['quant_dir'], 'deploy')
    result = run_deploy_check(qmodel, deploy_dir, real, [0])
    assert result['ok'], result
    assert result['max_abs_lsb'] <= 1
    assert_detections_match(result['detections'])


def test_match_detections_rules():
    box = np.array([[0, 0, -1, 4, 2, 1.5, 0.3]], np.float32)
    ref = dict(bboxes=np.concatenate([box, box + [10, 0, 0, 0, 0, 0, 0]]),
               scores=np.array([0.9, 0.5], np.float32),
               labels=np.array([0, 1]))
    same = match_detections(ref, ref)
    assert same['ok'] and same['n_matched'] == 2 and same['min_iou'] > 0.999
    # a shifted box is not a match, and no tie explains it
    moved = dict(ref, bboxes=ref['bboxes'] + [0.5, 0, 0, 0, 0, 0, 0],
                 scores=ref['scores'] - 0.01)
    m = match_detections(ref, moved)
    assert not m['ok'] and m['n_matched'] == 0
    assert m['unexplained_ref'] == 2 and m['unexplained_out'] == 2
    # wrong label
    assert not match_detections(ref, dict(ref, labels=ref['labels'][::-1]))[
        'ok']
    # a missing box whose score another box shares: explained by tie order
    tied = dict(bboxes=ref['bboxes'], scores=np.array([0.5, 0.5],
                                                      np.float32),
                labels=ref['labels'])
    one = {k: v[:1] for k, v in tied.items()}
    m = match_detections(tied, one)
    assert m['ok'] and m['unmatched_ref'] == 1 and m['unexplained_ref'] == 0
    # a swap inside a group of equal scores cut by max_num: explained
    other = dict(bboxes=ref['bboxes'][:1] + [0, 20, 0, 0, 0, 0, 0],
                 scores=ref['scores'][:1], labels=np.array([3]))
    m = match_detections({k: v[:1] for k, v in ref.items()}, other)
    assert m['ok'] and m['unmatched_ref'] == 1 and m['n_matched'] == 0
    # NMS knock-on: the pipeline lost tie member K (kept K' instead), so
    # box X, which K suppressed in the reference, survives: explained; the
    # same X far from K is not
    k = box[0]
    kprime = k + [30, 0, 0, 0, 0, 0, 0]
    x = k + [1.0, 0, 0, 0, 0, 0, 0]
    ref3 = dict(bboxes=np.stack([k, kprime]), scores=np.array([.5, .5]),
                labels=np.array([0, 0]))
    out3 = dict(bboxes=np.stack([kprime, x]), scores=np.array([.5, .3]),
                labels=np.array([0, 0]))
    m = match_detections(ref3, out3)
    assert m['ok'] and m['n_matched'] == 1 and m['unmatched_out'] == 1
    far = dict(out3, bboxes=np.stack([kprime, x + [0, 15, 0, 0, 0, 0, 0]]))
    m = match_detections(ref3, far)
    assert not m['ok'] and m['unexplained_out_index'] == [1]
    # empty vs empty
    empty = dict(bboxes=np.zeros((0, 7)), scores=np.zeros(0),
                 labels=np.zeros(0, int))
    assert match_detections(empty, empty)['ok']
    assert not match_detections(ref, empty)['ok']
