"""tools/infer.py, tools/deploy_test.py, mmdet3d_vitis.deploy.evaluate and
mmdet3d_vitis.deploy.bev_plot on the random-weight deploy folder shared
by the session (conftest.shared_deploy) and the tiny synthetic set."""
import glob
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest

import mmdet3d_vitis  # noqa: F401  (registers the plugin)
from mmdet3d_vitis.cli import run_cli
from mmdet3d_vitis.deploy import (ConfigMismatchError, NoDetectionsError,
                                  Pipeline, PointCloudError,
                                  evaluate_pipeline, plot_bev)
from mmdet3d_vitis.deploy.bev_plot import bev_corners
from mmdet3d_vitis.deploy.evaluate import check_pipeline_config
from mmdet3d_vitis.errors import UserInputError

from conftest import SMALL_PP_CONFIG, load_tool

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def shared(shared_deploy):
    return shared_deploy


@pytest.fixture(scope='module')
def deploy_dir(shared):
    return shared[1]


@pytest.fixture(scope='module')
def options(shared):
    return shared[4]


@pytest.fixture(scope='module')
def infer_tool():
    return load_tool('infer')


@pytest.fixture(scope='module')
def deploy_test_tool():
    return load_tool('deploy_test')


@pytest.fixture(scope='module')
def lidar_file(tiny_synthetic_root):
    files = sorted(glob.glob(osp.join(tiny_synthetic_root, 'samples',
                                      'LIDAR_TOP', '*.pcd.bin')))
    assert files
    return files[0]


def _is_png(path):
    with open(path, 'rb') as f:
        head = f.read(8)
    return head == PNG_MAGIC and osp.getsize(path) > 100


# ---------------------------------------------------------------------------
# bev_plot


def test_bev_corners_rotate_about_the_centre():
    box = np.array([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2]])
    c = bev_corners(box)[0]
    # yaw 90 deg: the length (dx = 4) runs along y
    assert np.allclose(c.mean(0), [1.0, 2.0])
    assert np.allclose(np.ptp(c[:, 0]), 2.0) and np.allclose(
        np.ptp(c[:, 1]), 4.0)
    # corners 0 and 3 are the front (+x of the box) edge: here +y
    assert np.allclose(c[[0, 3]].mean(0), [1.0, 4.0])


def test_plot_bev_panels_and_atomic_write(tmp_path):
    rng = np.random.RandomState(0)
    pts = rng.uniform(-50, 50, size=(50000, 5)).astype(np.float32)
    boxes = np.array([[0, 0, -1, 4, 2, 1.5, 0.3, 0, 0],
                      [10, -5, -1, 1, 1, 1.8, -1.0, 0, 0]], np.float32)
    out = tmp_path / 'one.png'
    assert plot_bev(pts, boxes, [0, 8], str(out), title='t',
                    class_names=['car'] * 10,
                    point_cloud_range=[-50, -50, -5, 50, 50, 3]) == str(out)
    assert _is_png(out)
    out3 = tmp_path / 'three.png'
    panels = [('GT', boxes, [0, 1], 'green'), ('float', boxes[:1], [0], None),
              ('int8', np.zeros((0, 9)), [], None)]
    plot_bev(pts, panels, out_png=str(out3), class_names=['car'] * 10)
    assert _is_png(out3)
    # a bad panel fails before anything is written; nothing is left behind
    bad = tmp_path / 'bad.png'
    with pytest.raises(UserInputError, match='labels'):
        plot_bev(pts, boxes, [0], str(bad))
    with pytest.raises(UserInputError, match='>=7'):
        plot_bev(pts, [('x', np.zeros((2, 5)), [0, 0], None)],
                 out_png=str(bad))
    assert sorted(os.listdir(tmp_path)) == ['one.png', 'three.png']


# ---------------------------------------------------------------------------
# tools/infer.py


def test_infer_prints_table_and_writes_png(infer_tool, deploy_dir,
                                           lidar_file, tmp_path, capsys):
    png = tmp_path / 'sub' / 'bev.png'
    result = infer_tool.main([deploy_dir, lidar_file, '--bev-png', str(png),
                              '--num-threads', '1'])
    printed = capsys.readouterr().out
    assert 'class' in printed and 'score' in printed and 'yaw' in printed
    assert 'stage times (ms)' in printed and 'bev' in printed
    size = osp.getsize(lidar_file)
    assert result['num_points'] == size // 20
    k = result['scores'].shape[0]
    assert f'{k} detections' in printed
    assert result['bboxes'].shape == (k, 9)
    assert _is_png(png)
    assert os.listdir(png.parent) == ['bev.png']
    # the score threshold filters the table
    top = infer_tool.main([deploy_dir, lidar_file, '--score-thr', '2'])
    assert top['scores'].shape == (0, )


def test_infer_load_and_use_dim(infer_tool, deploy_dir, tmp_path, capsys):
    rng = np.random.RandomState(0)
    pts = rng.uniform(-40, 40, size=(500, 4)).astype(np.float32)
    path = tmp_path / 'kitti.bin'
    pts.tofile(path)
    # a KITTI-like 4-column file: columns 0 1 2 3 3 make the 5 features
    res = infer_tool.main([deploy_dir, str(path), '--load-dim', '4',
                           '--use-dim', '0', '1', '2', '3', '3'])
    assert res['num_points'] == 500
    with pytest.raises(UserInputError, match='expects 5'):
        infer_tool.main([deploy_dir, str(path), '--load-dim', '4',
                         '--use-dim', '4'])
    with pytest.raises(UserInputError, match='outside'):
        infer_tool.main([deploy_dir, str(path), '--load-dim', '4',
                         '--use-dim', '0', '1', '2', '3', '7'])


def test_infer_wrong_width_file_is_a_clean_error(infer_tool, deploy_dir,
                                                 tmp_path, capsys):
    path = tmp_path / 'odd.bin'
    np.zeros(5 * 10 + 1, np.float32).tofile(path)  # 204 bytes
    png = tmp_path / 'bev.png'
    argv = [deploy_dir, str(path), '--bev-png', str(png)]
    with pytest.raises(PointCloudError) as info:
        infer_tool.main(argv)
    msg = str(info.value)
    assert 'odd.bin' in msg and '204 bytes' in msg and '20' in msg
    # through the CLI wrapper: one line on stderr, exit status 2
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda _: infer_tool.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'odd.bin' in err
    assert 'Traceback' not in err
    assert sorted(os.listdir(tmp_path)) == ['odd.bin']
    with pytest.raises(PointCloudError, match='not found'):
        infer_tool.main([deploy_dir, str(tmp_path / 'missing.bin')])


# ---------------------------------------------------------------------------
# evaluate_pipeline / tools/deploy_test.py


def test_deploy_test_tool_metrics(deploy_test_tool, shared, deploy_dir,
                                  options, tmp_path, capsys):
    out_json = tmp_path / 'metrics.json'
    result = deploy_test_tool.main([
        deploy_dir, SMALL_PP_CONFIG, '--work-dir', str(tmp_path / 'work'),
        '--out-json', str(out_json), '--num-threads', '1', '--cfg-options',
        *options
    ])
    printed = capsys.readouterr().out
    keys = list(result['metrics'])
    assert any(k.endswith('/NDS') for k in keys)
    assert any(k.endswith('/mAP') for k in keys)
    assert 'mAP' in printed and 'NDS' in printed and 'ms per frame' in printed
    assert result['num_frames'] == result['total_frames'] >= 1
    assert result['seconds_per_frame'] > 0 and result['num_detections'] > 0
    assert 0 <= result['summary']['NDS'] <= 1
    # same split, same evaluator as the PyTorch int8 model of quant.py's
    # test mode (ONNX rounding may move a few boxes: loose bound)
    int8 = shared[2]['int8']
    with capsys.disabled():
        print(f"\nint8 torch mAP {int8['mAP']:.4f} NDS {int8['NDS']:.4f}; "
              f"deploy mAP {result['summary']['mAP']:.4f} NDS "
              f"{result['summary']['NDS']:.4f}")
    assert abs(result['summary']['mAP'] - int8['mAP']) <= 0.05
    saved = json.loads(out_json.read_text())
    assert set(saved['metrics']) == set(result['metrics'])
    np.testing.assert_equal([saved['metrics'][k] for k in keys],
                            [result['metrics'][k] for k in keys])  # NaN ok
    assert saved['deploy_dir'] == osp.abspath(deploy_dir)
    # the metric's files went to the work dir
    assert glob.glob(str(tmp_path / 'work' / '**' / '*.json'),
                     recursive=True)


def test_deploy_test_class_mismatch_is_a_clean_error(
        deploy_test_tool, deploy_dir, options, tmp_path, capsys):
    names = Pipeline(deploy_dir).class_names
    other = '[' + ','.join(reversed(names)) + ']'
    argv = [deploy_dir, SMALL_PP_CONFIG, '--work-dir', str(tmp_path / 'w'),
            '--out-json', str(tmp_path / 'm.json'), '--cfg-options',
            *options, f'test_dataloader.dataset.metainfo.classes={other}']
    with pytest.raises(ConfigMismatchError, match='class'):
        deploy_test_tool.main(argv)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda _: deploy_test_tool.main(argv))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith('error: ')
    assert not (tmp_path / 'm.json').exists()


def _load_cfg(options):
    from mmdet3d_vitis.config_utils import load_config
    args = load_tool('deploy_test').parse_args(
        ['deploy', SMALL_PP_CONFIG, '--cfg-options', *options])
    return load_config(SMALL_PP_CONFIG, args.cfg_options, splits=('test', ))


def test_evaluate_pipeline_partial_and_no_detections(deploy_dir, options,
                                                     tmp_path):
    cfg = _load_cfg(options)
    pipeline = Pipeline(deploy_dir, num_threads=1)
    res = evaluate_pipeline(pipeline, cfg, max_frames=1, progress=False)
    assert res['num_frames'] == 1 and res['total_frames'] >= 1
    assert any(k.endswith('/NDS') for k in res['metrics'])
    # a score threshold nothing passes: a clear error, not the devkit's
    dst = tmp_path / 'deploy'
    shutil.copytree(deploy_dir, dst)
    manifest = json.loads((dst / 'pipeline.json').read_text())
    manifest['test_cfg']['score_thr'] = 1.0
    (dst / 'pipeline.json').write_text(json.dumps(manifest))
    silent = Pipeline(str(dst), num_threads=1)
    with pytest.raises(NoDetectionsError, match='nothing'):
        evaluate_pipeline(silent, cfg, work_dir=str(tmp_path / 'w'),
                          max_frames=1, progress=False)
    assert issubclass(NoDetectionsError, UserInputError)
    with pytest.raises(UserInputError, match='max_frames'):
        evaluate_pipeline(pipeline, cfg, max_frames=0)


def test_check_pipeline_config(deploy_dir, options):
    pipeline = Pipeline(deploy_dir)
    cfg = _load_cfg(options)
    check_pipeline_config(pipeline, cfg)  # the config it was made with
    with pytest.raises(ConfigMismatchError, match='5'):
        check_pipeline_config(pipeline, num_features=4)
    with pytest.raises(ConfigMismatchError, match='classes'):
        check_pipeline_config(pipeline,
                              class_names=pipeline.class_names[:-1])


class _TorchInt8AsPipeline:
    """The PyTorch int8 model behind the Pipeline interface (frames in
    dataset order), to check evaluate_pipeline's plumbing."""

    def __init__(self, qmodel, dataset, like):
        self.qmodel, self.dataset, self.index = qmodel, dataset, 0
        self.class_names, self.num_features = like.class_names, \
            like.num_features
        self.empty_result = like.empty_result
        self.stage_times = {}

    def __call__(self, points):
        import torch
        from mmengine.dataset import pseudo_collate
        sample = self.dataset[self.index]
        assert np.array_equal(sample['inputs']['points'].numpy(), points)
        self.index += 1
        batch = pseudo_collate([sample])
        model = self.qmodel.model
        with torch.no_grad():
            data = model.data_preprocessor(batch, False)
            inst = model.predict(data['inputs'],
                                 data['data_samples'])[0].pred_instances_3d
        return dict(bboxes=inst.bboxes_3d.tensor.numpy(),
                    scores=inst.scores_3d.numpy(),
                    labels=inst.labels_3d.numpy())


def test_evaluate_pipeline_reproduces_the_runner_metrics(
        quant_tool, shared, deploy_dir, options):
    """The int8 model's detections through evaluate_pipeline give exactly
    the metrics quant.py's test mode got with mmengine's test loop."""
    from mmdet3d_vitis.quantization.quant_runner import (
        build_dataset, eval_dataset_cfg, load_float_detector,
        load_quant_config, load_test_model)
    quant_dir, _, report, checkpoint, _ = shared
    opts = quant_tool.options_from_args(quant_tool.parse_args([
        SMALL_PP_CONFIG, checkpoint, '--quant_mode', 'test', '--quant_dir',
        quant_dir, '--backend', 'builtin', '--cfg-options', *options
    ]))
    cfg = load_quant_config(opts)
    qmodel, _, _ = load_test_model(opts, load_float_detector(cfg, checkpoint))
    dataset = build_dataset(eval_dataset_cfg(cfg))
    fake = _TorchInt8AsPipeline(qmodel, dataset, Pipeline(deploy_dir))
    res = evaluate_pipeline(fake, cfg, progress=False, dataset=dataset)
    assert fake.index == len(dataset)
    ref = report['metrics']['int8']
    keys = sorted(ref)
    assert sorted(res['metrics']) == keys
    np.testing.assert_allclose([res['metrics'][k] for k in keys],
                               [ref[k] for k in keys], atol=1e-6)
