"""tools/benchmark.py --latency on the real nuScenes frame (smoke test).

The session's random-weight deploy folder (conftest.shared_deploy) of the
small PointPillars; the benchmark then times both
sides on the shared real frame with 2 repeats.  No timing thresholds: only
the report's shape and sanity are checked.
"""
import json
import shutil

import pytest

from mmdet3d_vitis.deploy.latency import DEPLOY_DETAIL, STAGES
from mmdet3d_vitis.errors import UserInputError

from conftest import SMALL_PP_CONFIG, load_tool


@pytest.fixture(scope='module')
def benchmark_tool():
    return load_tool('benchmark')


@pytest.fixture(scope='module')
def deployed(shared_deploy):
    _, deploy_dir, _, ckpt, options = shared_deploy
    return ckpt, deploy_dir, options


def _summary_ok(s):
    assert s['n'] == 2
    assert 0 < s['min_ms'] <= s['p10_ms'] <= s['median_ms'] <= s[
        'p90_ms'] <= s['max_ms']


def test_latency_report(benchmark_tool, deployed, nuscenes_demo_dir,
                        tmp_path):
    ckpt, deploy_dir, options = deployed
    out = tmp_path / 'latency.json'
    results = benchmark_tool.main([
        SMALL_PP_CONFIG, ckpt, '--deploy_dir', deploy_dir, '--latency',
        '--frame', nuscenes_demo_dir, '--repeats', '2', '--warmup', '0',
        '--out', str(out), '--cfg-options', *options[-2:]
    ])
    with open(out) as f:
        report = json.load(f)['latency']
    assert report == json.loads(json.dumps(results['latency']))
    for side in ('float', 'deployed'):
        assert set(report[side]['stages']) == set(STAGES)
        for s in report[side]['stages'].values():
            _summary_ok(s)
        _summary_ok(report[side]['total'])
        assert report[side]['num_pillars'] > 1000
    assert set(report['deployed']['detail']) == set(DEPLOY_DETAIL)
    _summary_ok(report['deployed']['glue'])
    _summary_ok(report['deployed']['scatter_all_stale'])
    assert 0 < report['glue_share'] < 1
    assert report['scatter_speedup'] > 0
    assert report['scatter_speedup_all_stale'] > 0
    # both sides saw the same points: same pillar count
    assert (report['float']['num_pillars'] ==
            report['deployed']['num_pillars'])
    frame = report['frame']
    assert frame['num_points'] > 10000 and frame['num_features'] == 5
    assert 'LIDAR_TOP' in frame['path']
    assert report['machine']['threads'] == 1
    assert set(report['versions']) >= {'torch', 'onnxruntime', 'mmdet3d'}


def test_latency_input_errors(benchmark_tool, deployed, nuscenes_demo_dir,
                              tmp_path):
    ckpt, deploy_dir, _ = deployed
    base = ['--latency', '--frame', nuscenes_demo_dir, '--repeats', '1',
            '--warmup', '0', '--out', str(tmp_path / 'x.json')]
    with pytest.raises(UserInputError, match='checkpoint not found'):
        benchmark_tool.main([SMALL_PP_CONFIG, str(tmp_path / 'no.pth'),
                             '--deploy_dir', deploy_dir, *base])
    with pytest.raises(UserInputError, match='no such folder'):
        benchmark_tool.main([SMALL_PP_CONFIG, ckpt, '--deploy_dir',
                             str(tmp_path / 'nowhere'), *base])
    with pytest.raises(UserInputError, match='needs --deploy_dir'):
        benchmark_tool.main([SMALL_PP_CONFIG, ckpt, *base])
    with pytest.raises(UserInputError, match='pick a benchmark'):
        benchmark_tool.main([SMALL_PP_CONFIG, ckpt])
    with pytest.raises(UserInputError, match='--frame'):
        benchmark_tool.main([SMALL_PP_CONFIG, ckpt, '--deploy_dir',
                             deploy_dir, *base[:1], '--frame',
                             str(tmp_path), *base[3:]])
    # a deploy folder of another model (here: other class names)
    other = tmp_path / 'other'
    shutil.copytree(deploy_dir, other)
    manifest = json.loads((other / 'pipeline.json').read_text())
    manifest['model']['class_names'][0] = 'not_a_car'
    (other / 'pipeline.json').write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match='not built from this config'):
        benchmark_tool.main([SMALL_PP_CONFIG, ckpt, '--deploy_dir',
                             str(other), *base])
    assert not (tmp_path / 'x.json').exists()
