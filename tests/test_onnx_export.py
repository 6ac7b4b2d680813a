"""ONNX QDQ export of frozen builtin-backend DPU subgraphs + deploy check.

The exported model must pass onnx's full check, carry int8 power-of-two
QuantizeLinear / DequantizeLinear, run in onnxruntime and reproduce the
PyTorch fake-quant module: bit-exactly when the PyTorch graph rounds ties to
even like ONNX, and up to the tie-rounding difference (half up on the DPU)
otherwise.
"""
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from mmdet3d_vitis.quantization.backends import (QuantStateError,  # noqa
                                                 get_backend)
from mmdet3d_vitis.quantization.backends.onnx_export import (  # noqa: E402
    activation_grids, compare_in_lsb, deploy_check, format_report,
    run_onnxruntime)


from conftest import (calibrate_builtin, randomize_bn,  # noqa: E402
                      second_block)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class SecondBEV(nn.Module):
    """SECOND backbone + SECONDFPN neck + anchor head convs."""

    def __init__(self, c_in=8):
        super().__init__()

        self.blocks = nn.ModuleList([second_block(c_in, 16, 1),
                                     second_block(16, 32, 2)])
        self.deblocks = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(16, 16, 1, bias=False),
                          nn.BatchNorm2d(16, eps=1e-3), nn.ReLU()),
            nn.Sequential(nn.ConvTranspose2d(32, 16, 2, stride=2,
                                             bias=False),
                          nn.BatchNorm2d(16, eps=1e-3), nn.ReLU()),
        ])
        self.conv_cls = nn.Conv2d(32, 4, 1)
        self.conv_reg = nn.Conv2d(32, 14, 1)
        self.conv_dir = nn.Conv2d(32, 4, 1)

    def forward(self, bev):
        feats, x = [], bev
        for blk in self.blocks:
            x = blk(x)
            feats.append(x)
        x = torch.cat([d(f) for d, f in zip(self.deblocks, feats)], dim=1)
        return self.conv_cls(x), self.conv_reg(x), self.conv_dir(x)


class PillarEncoder(nn.Module):
    """PFN: 1x1 conv + BN + ReLU, max over the points axis."""

    def __init__(self, c_in=10, c_out=32):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d((1, 8))

    def forward(self, x):  # (1, C, pillars, points)
        return self.pool(self.relu(self.bn(self.conv(x))))


def make(kind):
    g = torch.Generator().manual_seed(0)
    if kind == 'pillar':
        shape, net = (1, 10, 48, 8), randomize_bn(PillarEncoder())
    else:
        shape, net = (1, 8, 16, 16), randomize_bn(SecondBEV())
    inputs = [(torch.randn(*shape, generator=g), ) for _ in range(4)]
    return net, inputs[:3], inputs[3]


def is_pow2(v):
    return v > 0 and math.frexp(v)[0] == 0.5


@pytest.mark.parametrize('kind', ['pillar', 'bev'])
def test_export_qdq_onnx_and_deploy_check(tmp_path, kind):
    net, calib_inputs, held_out = make(kind)
    name = {'pillar': 'pe', 'bev': 'bev'}[kind]
    backend, qmod = calibrate_builtin(tmp_path / 'q', name, net, calib_inputs)
    path = tmp_path / f'{name}.onnx'
    info = backend.export_onnx(name, qmod, held_out, str(path))
    assert info['path'] == str(path) and path.is_file()
    assert [p for p in os.listdir(tmp_path) if p.endswith('.tmp')] == []

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: numpy_helper.to_array(i)
             for i in model.graph.initializer}
    consts = {}
    for n in model.graph.node:
        if n.op_type == 'Constant':
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    values = {**inits, **consts}
    qdq = [n for n in model.graph.node
           if n.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    n_q = sum(n.op_type == 'QuantizeLinear' for n in qdq)
    n_act = sum(k in ('input', 'act') for k in qmod.tensors.values())
    n_par = sum(k in ('weight', 'bias') for k in qmod.tensors.values())
    assert n_q == n_act == info['n_quantize_linear']
    assert len(qdq) - n_q == n_act + n_par == info['n_dequantize_linear']
    scales = set()
    for n in qdq:
        scale, zp = values[n.input[1]], values[n.input[2]]
        assert scale.dtype == np.float32 and scale.shape == ()
        assert is_pow2(float(scale))
        assert zp.dtype == np.int8 and int(zp) == 0
        scales.add(float(scale))
        if n.op_type == 'DequantizeLinear' and n.input[0] in inits:
            assert inits[n.input[0]].dtype == np.int8  # weights / biases
    assert scales == {2.0**-p for p in qmod.fix_positions().values()}
    # no float weight is left in the graph
    assert all(v.dtype != np.float32 or v.size == 1 for v in inits.values())

    # the scales the export reports are the calibrated fix positions
    pos = qmod.fix_positions()
    for o in info['outputs'] + info['inputs']:
        assert o['scale'] == 2.0**-pos[o['tensor']]
    assert len(info['outputs']) == (1 if kind == 'pillar' else 3)

    # every activation of these conv/ReLU/add/cat nets has a known grid,
    # so every one gets the tie offset that makes ONNX round half up
    grids = activation_grids(qmod)
    assert grids and all(g is not None for g in grids.values()), grids
    n_add = sum(n.op_type == 'Add' and n.input[1] in values and
                values[n.input[1]].size == 1 for n in model.graph.node)
    assert n_add == sum(g > pos[k] for k, g in grids.items())

    # deploy check: onnxruntime vs PyTorch, per output in LSBs
    out_scales = [o['scale'] for o in info['outputs']]
    check = deploy_check(qmod, str(path), held_out, out_scales)
    print(f'\n[{kind}]\n' + format_report(check))
    with torch.no_grad():
        dpu = qmod(*held_out)
    dpu = dpu if isinstance(dpu, tuple) else (dpu, )
    ort = run_onnxruntime(str(path), held_out)
    for t, o, s in zip(dpu, ort, out_scales):
        d = (o.astype(np.float64) - t.double().numpy()) / s
        assert np.array_equal(d, np.round(d))  # whole LSBs, on the grid
    # the held-out data does hit ties that plain ONNX rounds differently
    # (the BEV net's outputs were 3-5 LSB off before the tie offsets) ...
    assert check['n_round_differ'] > 0
    if kind == 'bev':
        assert max(r['max_abs_lsb'] for r in check['vs_half_even']) > 1
    # ... and only the float network input's ties stay uncorrected
    assert all(t['tie_corrected'] for t in check['ties']
               if t['kind'] == 'act')
    if check['n_uncorrected'] == 0:
        assert all(r['n_differ'] == 0 for r in check['vs_dpu']), \
            format_report(check)
    # the bound: <= 1 LSB of each output's scale everywhere
    for r in check['vs_dpu']:
        assert r['max_abs_lsb'] <= 1, format_report(check)


def test_compare_in_lsb():
    t = (torch.tensor([0.0, 0.25, 0.5, 1.0]), torch.zeros(2, 2))
    o = [np.array([0.0, 0.5, 0.5, 0.75], np.float32),
         np.zeros((2, 2), np.float32)]
    r = compare_in_lsb(t, o, [0.25, 0.5])
    assert r[0]['max_abs_lsb'] == 1 and r[0]['n_differ'] == 2
    assert r[0]['share_differ'] == 0.5 and r[0]['n_over_1_lsb'] == 0
    assert r[1]['max_abs_lsb'] == 0 and r[1]['n_differ'] == 0
    with pytest.raises(ValueError):
        compare_in_lsb(t, o, [0.25])


def test_unfrozen_module_is_refused(tmp_path):
    net, inputs, held_out = make('pillar')
    backend = get_backend('builtin', 'calib', str(tmp_path / 'q'))
    qmod = backend.wrap('pe', net, inputs[0])
    path = tmp_path / 'pe.onnx'
    with pytest.raises(QuantStateError, match='not frozen'):
        backend.export_onnx('pe', qmod, held_out, str(path))
    with torch.no_grad():
        qmod(*inputs[0])  # calibrated, but not exported yet: still refused
    with pytest.raises(QuantStateError, match='export_quant_config'):
        backend.export_onnx('pe', qmod, held_out, str(path))
    with pytest.raises(QuantStateError, match='not a module wrapped'):
        backend.export_onnx('pe', net, held_out, str(path))
    assert not path.exists()


def test_export_is_atomic_and_test_mode_exports_the_same(tmp_path,
                                                         monkeypatch):
    net, inputs, held_out = make('pillar')
    backend, qmod = calibrate_builtin(tmp_path / 'q', 'pe', net, inputs)
    path = tmp_path / 'pe.onnx'
    backend.export_onnx('pe', qmod, held_out, str(path))
    before = path.read_bytes()

    # test mode reloads the same state and exports the same model
    test_backend = get_backend('builtin', 'test', str(tmp_path / 'q'))
    qtest = test_backend.wrap('pe', net, held_out)
    other = tmp_path / 'pe_test.onnx'
    test_backend.export_onnx('pe', qtest, held_out, str(other))
    assert other.read_bytes() == before

    # a failure while writing leaves the previous file and no temp file
    def broken_check(model, full_check=False):
        raise onnx.checker.ValidationError('broken')

    monkeypatch.setattr(onnx.checker, 'check_model', broken_check)
    with pytest.raises(onnx.checker.ValidationError):
        backend.export_onnx('pe', qmod, held_out, str(path))
    monkeypatch.undo()
    real_write = onnx.ModelProto.SerializeToString

    def half_write(f):
        f.write(b'half a model')
        raise OSError('disk full')

    import mmdet3d_vitis.quantization.backends.onnx_export as ox
    monkeypatch.setattr(
        ox, 'atomic_write',
        lambda p, fn, _w=ox.atomic_write: _w(p, half_write))
    with pytest.raises(OSError, match='disk full'):
        backend.export_onnx('pe', qmod, held_out, str(path))
    assert path.read_bytes() == before and real_write
    assert sorted(os.listdir(tmp_path)) == ['pe.onnx', 'pe_test.onnx', 'q']
