"""Model-zoo benchmarking: GOPs counting, rows, the table and the pictures.

* GOPs of a toy net equal a hand count; the zoo PointPillars mirror at
  40000 x 64 is within 10 % of the zoo's 108 G (zoo count) and its
  arithmetic count differs by exactly the transposed convs' zero insertion;
* ``tools/benchmark.py --row`` twice on the same inputs (a random small
  checkpoint on the tiny synthetic set, float evaluated by the tool; and a
  quant folder's report) gives identical accuracy and GOPs;
* ``tools/zoo_table.py`` regenerated from the committed ``results/*.json``
  equals the committed table block and metafile;
* the three plot functions write valid PNGs.
"""
import glob
import json
import os.path as osp

import numpy as np
import pytest
import torch
from torch import nn

from conftest import (REPO, SMALL_PP_CONFIG, ZOO_PP_CONFIG, load_tool,
                      quant_test_options, save_random_small_checkpoint)

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _png_ok(path):
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


# ---------------------------------------------------------------------------
# GOPs


class _Toy(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.deconv(x)  # (1, 4, 16, 16)
        return self.fc(x.permute(0, 2, 3, 1))


def test_toy_gops_hand_count():
    from mmdet3d_vitis.quantization.ops_count import count_module_ops
    ops = count_module_ops(_Toy(), (torch.zeros(1, 3, 16, 16), ))
    conv = 8 * 8 * 8 * 3 * 3 * 3  # out elements x C_in x k x k
    deconv = 8 * 8 * 8 * 4 * 2 * 2  # in elements x C_out x k x k
    deconv_zoo = 4 * 16 * 16 * 8 * 2 * 2  # out elements x C_in x k x k
    fc = 16 * 16 * 5 * 4  # out elements x in features
    assert [r['macs'] for r in ops['layers']] == [conv, deconv, fc]
    assert ops['macs'] == conv + deconv + fc
    assert ops['macs_zoo'] == conv + deconv_zoo + fc
    assert ops['gops'] == pytest.approx(2 * ops['macs'] / 1e9)
    assert ops['params'] == sum(p.numel() for p in _Toy().parameters())
    assert ops['dpu_macs'] == ops['macs']


def test_zoo_mirror_gops():
    from mmengine.config import Config

    import mmdet3d_vitis  # noqa: F401
    from mmdet3d.registry import MODELS
    from mmdet3d_vitis.quantization.ops_count import count_detector_ops
    detector = MODELS.build(Config.fromfile(ZOO_PP_CONFIG).model)
    ops = count_detector_ops(detector)
    assert ops['input']['max_voxels'] == 40000
    assert ops['input']['max_points'] == 64
    assert ops['input']['bev_grid'] == [400, 400]
    # the zoo lists 108 G: within 10 % with transposed convs counted as the
    # DPU runs them (on their zero-inserted input)
    assert abs(ops['total_gops_zoo'] - 108) / 108 < 0.10
    assert ops['total_gops_zoo'] == pytest.approx(104.714, abs=1e-3)
    # the arithmetic count (61.46 G) differs by the deconvs alone
    layers = [r for s in ops['subgraphs'].values() for r in s['layers']]
    diff = [r for r in layers if r['macs'] != r['macs_zoo']]
    assert {r['name'] for r in diff} == {'neck.deblocks.1.0',
                                         'neck.deblocks.2.0'}
    assert all(r['macs_zoo'] == r['macs'] * s * s for r, s in zip(
        sorted(diff, key=lambda r: r['name']), (2, 4)))
    assert ops['total_gops'] == pytest.approx(61.46, abs=0.01)
    assert ops['subgraphs']['pillar_encoder']['gops'] == pytest.approx(
        2 * 40000 * 64 * 64 * 11 / 1e9)
    assert ops['dpu_coverage'] == 1.0


# ---------------------------------------------------------------------------
# rows


@pytest.fixture(scope='module')
def benchmark_tool():
    return load_tool('benchmark')


@pytest.fixture(scope='module')
def random_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp('zoo')
    return save_random_small_checkpoint(str(root / 'random.pth'),
                                        spread_cls_scores=True)


def _stable(row):
    return (row['accuracy'], row['ops'], row['input'])


def test_row_is_reproducible(benchmark_tool, random_ckpt,
                             tiny_synthetic_root, tmp_path):
    options = quant_test_options(tiny_synthetic_root)
    rows = []
    for i in range(2):
        out = tmp_path / f'row{i}.json'
        benchmark_tool.main([SMALL_PP_CONFIG, random_ckpt, '--row', '--out',
                             str(out), '--cfg-options', *options])
        rows.append(json.loads(out.read_text()))
    assert _stable(rows[0]) == _stable(rows[1])
    row = rows[0]
    assert row['accuracy']['float_from'] == 'evaluated by tools/benchmark.py'
    assert 'mAP' in row['accuracy']['float']
    assert row['accuracy']['int8'] == [] and row['latency'] is None
    assert row['input']['max_voxels'] == 20000
    assert row['ops']['total_gops'] == pytest.approx(2.125, abs=1e-3)
    assert set(row['environment']['versions']) >= {'torch', 'mmdet3d',
                                                   'onnxruntime', 'mmcv'}
    # a quant folder's report: its accuracy, labelled by what it says
    qdir = tmp_path / 'q'
    qdir.mkdir()
    report = dict(float=row['accuracy']['float'],
                  int8=dict(row['accuracy']['float'], mAP=0.01),
                  delta=dict(mAP=-0.5), fast_finetune=True, backend='builtin',
                  bitwidth=8, calib=dict(seconds=12.5, calib_len=3,
                                         fast_finetune=True, fft_len=2))
    (qdir / 'report.json').write_text(json.dumps(report))
    again = []
    for i in range(2):
        out = tmp_path / f'q{i}.json'
        benchmark_tool.main([SMALL_PP_CONFIG, random_ckpt, '--row',
                             '--quant_dir', str(qdir), '--out', str(out),
                             '--cfg-options', *options])
        again.append(json.loads(out.read_text()))
    assert _stable(again[0]) == _stable(again[1])
    (q8, ) = again[0]['accuracy']['int8']
    assert q8['method'] == 'fast_finetune' and q8['metrics']['mAP'] == 0.01
    assert q8['calib_seconds'] == 12.5
    assert again[0]['accuracy']['float'] == row['accuracy']['float']
    assert again[0]['ops'] == row['ops']


def test_row_input_errors(benchmark_tool, random_ckpt, tmp_path):
    from mmdet3d_vitis.errors import UserInputError
    with pytest.raises(UserInputError, match='no report.json'):
        benchmark_tool.main([SMALL_PP_CONFIG, random_ckpt, '--row',
                             '--quant_dir', str(tmp_path), '--out',
                             str(tmp_path / 'x.json')])
    with pytest.raises(UserInputError, match='--plots needs a --quant_dir'):
        benchmark_tool.main([SMALL_PP_CONFIG, random_ckpt, '--plots',
                             '--out', str(tmp_path / 'x.json')])
    assert not (tmp_path / 'x.json').exists()


# ---------------------------------------------------------------------------
# table and metafile


def test_zoo_table_matches_committed_files(tmp_path):
    zoo_table = load_tool('zoo_table')
    rows = sorted(glob.glob(osp.join(REPO, 'results', '*.json')))
    if not rows:
        pytest.skip('no committed zoo rows in results/')
    table = osp.join(REPO, 'results', 'README_zoo_table.md')
    readme = osp.join(REPO, 'README.md')
    expected = zoo_table.outputs(rows, readme, table, REPO)
    assert table in expected
    metafiles = [p for p in expected if p.endswith('metafile.yml')]
    assert metafiles
    for path, text in expected.items():
        assert osp.isfile(path), f'{path} not generated (run ' \
            'tools/zoo_table.py results/*.json)'
        with open(path) as f:
            assert f.read() == text, f'{path} is out of date (run ' \
                'tools/zoo_table.py results/*.json)'
    # the block names the commands of every row
    block = expected[table]
    for path in rows:
        with open(path) as f:
            assert json.load(f)['command'] in block
    # and a README with markers is rewritten in place, rest untouched
    from mmdet3d_vitis.deploy.zoo import TABLE_END, TABLE_START
    fake = tmp_path / 'README.md'
    fake.write_text(f'# title\n\n{TABLE_START}\nold\n{TABLE_END}\n\nend\n')
    zoo_table.main([*rows, '--readme', str(fake), '--table',
                    str(tmp_path / 't.md'), '--root', str(tmp_path)])
    text = fake.read_text()
    assert text.startswith('# title\n\n') and text.endswith('\n\nend\n')
    assert 'old' not in text and block.rstrip('\n') in text
    zoo_table.main([*rows, '--readme', str(fake), '--table',
                    str(tmp_path / 't.md'), '--root', str(tmp_path),
                    '--check'])


# ---------------------------------------------------------------------------
# pictures


def test_plots_write_pngs(tmp_path):
    from mmdet3d_vitis.deploy.latency import STAGES
    from mmdet3d_vitis.deploy.latency_scaling import resample_points
    from mmdet3d_vitis.deploy.plots import (plot_detection_comparison,
                                            plot_latency_scaling,
                                            plot_layer_sqnr)
    rng = np.random.RandomState(0)
    points = rng.uniform(-40, 40, (5000, 5)).astype(np.float32)
    box = np.array([[5, 5, 0, 4, 2, 1.5, 0.3, 0, 0]], np.float32)
    dets = dict(bboxes=box, scores=np.array([0.9]), labels=np.array([0]))
    plot_detection_comparison(points, dict(bboxes=box, labels=[0]), dets,
                              dets, str(tmp_path / 'bev.png'),
                              class_names=['car'], title='GT / float / int8')
    sqnr = {'pillar_encoder': [dict(tensor='pe::pe/conv', sqnr_db=30.0)],
            'bev': [dict(tensor='bev::bev/a', sqnr_db=25.0),
                    dict(tensor='bev::bev/b', sqnr_db=float('inf'))]}
    plot_layer_sqnr(sqnr, str(tmp_path / 'sqnr.png'))
    s = dict(median_ms=1.0, p10_ms=0.9, p90_ms=1.2)
    runs = [dict(num_points=n, num_pillars=n // 10,
                 float={k: s for k in STAGES + ('total', )},
                 deployed={k: s for k in STAGES + ('total', )})
            for n in (10000, 20000)]
    plot_latency_scaling(dict(runs=runs, stages=list(STAGES), threads=1),
                         str(tmp_path / 'lat.png'))
    for name in ('bev', 'sqnr', 'lat'):
        _png_ok(tmp_path / f'{name}.png')
    more = resample_points(points, 12000, seed=1)
    assert more.shape == (12000, 5) and more.dtype == np.float32
    assert np.array_equal(more, resample_points(points, 12000, seed=1))
