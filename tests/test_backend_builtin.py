"""The builtin (brevitas) quantization backend: DPU int8 arithmetic.

The references here are independent numpy float64 re-computations of what
vai_q_pytorch documents for a DPU target: q = clamp(round(x * 2**p), -128,
127), activations rounded half up, weights / biases / the network input
rounded half away from zero, diffs fix positions.
"""
import copy
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.quantization.backends import (BuiltinBackend,
                                                 QuantStateError,
                                                 get_backend)
from mmdet3d_vitis.quantization.backends.dpu_arithmetic import (
    LEAKY_RELU_SLOPE, DPUActQuant, DPUBiasQuant, DPUInputQuant,
    DPUWeightQuant, FixPosScaling, conv_shift_adjust, diffs_fix_pos,
    modal_fix_pos, overflow_safe_fix_pos)
from mmdet3d_vitis.quantization.backends.graph import (fold_batchnorm,
                                                       trace_subgraph)

import brevitas.nn as qnn  # noqa: E402  (after the backend silenced it)

from conftest import (calibrate_builtin, randomize_bn,  # noqa: E402
                      second_block)


# ---------------------------------------------------------------------------
# independent numpy reference of the DPU arithmetic
# ---------------------------------------------------------------------------
def np_half_up(v):
    return np.floor(v + 0.5)  # exact in float64 for float32-born values


def np_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def np_fix(x, p, rnd, bits=8):
    v = np.asarray(x, dtype=np.float64) * 2.0**p
    q = np.clip(rnd(v), -2**(bits - 1), 2**(bits - 1) - 1)
    return q * 2.0**-p


def np_diffs(x, scope=5, bits=8, rnd=np_half_up):
    x = np.asarray(x, dtype=np.float64)
    step = max(x.min() / (-2**(bits - 1) - 0.5),
               x.max() / (2**(bits - 1) - 0.5))
    p0 = int(np.floor(np.log2(1 / step)))
    errs = [((x - np_fix(x, p, rnd, bits))**2).sum()
            for p in range(p0, p0 + scope)]
    return p0, p0 + int(np.argmin(errs))


def sqnr_db(ref, out):
    ref, out = ref.double(), out.double()
    return (10 * torch.log10(ref.pow(2).sum() /
                             (ref - out).pow(2).sum())).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # layer init of the test nets


def scalers(module):
    return [m for m in module.modules() if isinstance(m, FixPosScaling)]


def set_fix_pos(module, p):
    for s in scalers(module):
        s.collecting = False
        s.set_fix_pos(p)


# ---------------------------------------------------------------------------
# small DPU subgraphs of the shapes the partition produces
# ---------------------------------------------------------------------------
class PillarNet(nn.Module):
    """PFN-like: 1x1 conv + BN + ReLU, max over points, cat, again."""

    def __init__(self, c_in=10, c1=16, c2=32, points=8):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2 * c1, c2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.points = points

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x_max = torch.max(x, dim=3, keepdim=True)[0]
        x = torch.cat([x, x_max.expand(-1, -1, -1, self.points)], dim=1)
        x = self.relu2(self.bn2(self.conv2(x)))
        return torch.max(x, dim=3, keepdim=True)[0]


class WrappedConvTranspose2d(nn.ConvTranspose2d):
    """Like mmcv's wrapper (SECONDFPN's deconv): a subclass outside torch.nn,
    which torch.fx would trace into a bare F.conv_transpose2d."""

    def forward(self, x):
        return super().forward(x)


class BEVNet(nn.Module):
    """SECOND + SECONDFPN + FPN-style lateral/add + anchor head."""

    def __init__(self, c_in=8, leaky=False):
        super().__init__()

        self.blocks = nn.ModuleList([second_block(c_in, 16, 1),
                                     second_block(16, 32, 2)])
        self.deblocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(16, 16, 1, bias=False),
                          nn.BatchNorm2d(16, eps=1e-3), nn.ReLU()),
            nn.Sequential(
                WrappedConvTranspose2d(32, 16, 2, stride=2, bias=False),
                nn.BatchNorm2d(16, eps=1e-3), nn.ReLU()),
        ])
        self.lateral = nn.ModuleList([nn.Conv2d(16, 16, 1),
                                      nn.Conv2d(32, 16, 1)])
        self.act = nn.LeakyReLU(0.2) if leaky else nn.ReLU()
        self.conv_cls = nn.Conv2d(48, 4, 1)
        self.conv_reg = nn.Conv2d(48, 14, 1)

    def forward(self, bev):
        feats, x = [], bev
        for blk in self.blocks:
            x = blk(x)
            feats.append(x)
        ups = [d(f) for d, f in zip(self.deblocks, feats)]
        lat0 = self.lateral[0](feats[0])
        lat1 = self.lateral[1](feats[1])
        lat0 = lat0 + F.interpolate(lat1, size=lat0.shape[2:], mode='nearest')
        x = torch.cat(ups + [self.act(lat0)], dim=1)
        return self.conv_cls(x), self.conv_reg(x)


def pillar_inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 10, 48, 8, generator=g), ) for _ in range(n)]


def bev_inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 8, 16, 16, generator=g), ) for _ in range(n)]


def as_tuple(out):
    return out if isinstance(out, tuple) else (out, )


# ---------------------------------------------------------------------------
# rounding and clamping
# ---------------------------------------------------------------------------
def tie_probe(p):
    """Values at exact .5 ties, near ties, inside, and overflowing."""
    k = np.arange(-131, 131, dtype=np.float64)
    vals = np.concatenate([
        (k + 0.5), (k + 0.25), k, k + np.nextafter(np.float32(0.5), 0),
        [-0.5, 0.5, -1.5, 1.5, 2.5, -2.5, 126.5, 127.5, -127.5, -128.5,
         -129, 300, -300, 1e6, -1e6, 0.0]
    ]) * 2.0**-p
    return torch.tensor(vals, dtype=torch.float32)


@pytest.mark.parametrize('p', [0, 4, -2])
def test_activation_rounds_half_up_and_clamps(p):
    q = qnn.QuantIdentity(act_quant=DPUActQuant)
    set_fix_pos(q, p)
    x = tie_probe(p)
    out = q(x).double().numpy()
    ref = np_fix(x.numpy(), p, np_half_up)
    np.testing.assert_array_equal(out, ref)
    # ties really go up, not to even and not away from zero
    assert q(torch.tensor([2.5, -2.5, 0.5, -0.5]) * 2.0**-p).tolist() == [
        v * 2.0**-p for v in (3, -2, 1, 0)]
    # and the full int8 range, [-128, 127]
    assert q(torch.tensor([1e9, -1e9])).tolist() == [
        127 * 2.0**-p, -128 * 2.0**-p]


@pytest.mark.parametrize('p', [0, 6])
def test_input_rounds_half_away_from_zero(p):
    q = qnn.QuantIdentity(act_quant=DPUInputQuant)
    set_fix_pos(q, p)
    x = tie_probe(p)
    np.testing.assert_array_equal(q(x).double().numpy(),
                                  np_fix(x.numpy(), p, np_half_away))
    assert q(torch.tensor([2.5, -2.5]) * 2.0**-p).tolist() == [
        3 * 2.0**-p, -3 * 2.0**-p]


def test_conv_weight_and_bias_round_half_away_and_conv_is_exact():
    conv = qnn.QuantConv2d(3, 4, 3, padding=1, bias=True,
                           weight_quant=DPUWeightQuant,
                           bias_quant=DPUBiasQuant, return_quant_tensor=False)
    pw, pb = 7, 5
    g = torch.Generator().manual_seed(0)
    w = (torch.randint(-140, 140, conv.weight.shape, generator=g) +
         0.5) * 2.0**-pw  # all ties, some overflowing
    b = (torch.arange(4) - 1.5) * 2.0**-pb + torch.tensor(
        [0.0, 0.0, 1e3, -1e3])
    conv.weight.data, conv.bias.data = w, b
    s_w = conv.weight_quant.tensor_quant.scaling_impl
    s_b = conv.bias_quant.tensor_quant.scaling_impl
    for s, p in ((s_w, pw), (s_b, pb)):
        s.collecting = False
        s.set_fix_pos(p)
    wq = np_fix(w.numpy(), pw, np_half_away)
    bq = np_fix(b.numpy(), pb, np_half_away)
    assert (np.abs(wq) <= 128 * 2.0**-pw).all() and wq.max() == 127 * 2.0**-pw
    x = torch.tensor(np_fix(torch.randn(1, 3, 5, 5, generator=g).numpy(), 4,
                            np_half_up), dtype=torch.float32)
    ref = F.conv2d(x.double(), torch.from_numpy(wq), torch.from_numpy(bq),
                   padding=1)
    torch.testing.assert_close(conv(x).double(), ref, rtol=0, atol=0)


def test_brevitas_dpu_round_differs_on_positive_ties():
    """Why the backend has its own rounding STE (documented deviation)."""
    from brevitas.function.ops import dpu_round
    from mmdet3d_vitis.quantization.backends.dpu_arithmetic import (
        round_half_up)
    x = torch.tensor([2.5, 0.5, -2.5])
    assert round_half_up(x).tolist() == [3.0, 1.0, -2.0]
    assert dpu_round(x).tolist() != [3.0, 1.0, -2.0]


# ---------------------------------------------------------------------------
# fix positions
# ---------------------------------------------------------------------------
def test_overflow_safe_fix_position():
    assert overflow_safe_fix_pos(torch.tensor([127.5 / 8, -1.0])) == 3
    assert overflow_safe_fix_pos(torch.tensor([127.51 / 8, -1.0])) == 2
    assert overflow_safe_fix_pos(torch.tensor([-128.5 / 8, 1.0])) == 3
    assert overflow_safe_fix_pos(torch.tensor([-128.6 / 8, 1.0])) == 2
    assert overflow_safe_fix_pos(torch.tensor([1000.0])) == -3
    # all zeros: nndct's 18, capped at 12 by the search
    assert overflow_safe_fix_pos(torch.zeros(5)) == 18
    assert diffs_fix_pos(torch.zeros(5)) == 12


def test_diffs_picks_higher_position_when_outliers_are_few():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(100000, generator=g) * 2 - 1) * 0.1
    x[:2] = torch.tensor([3.0, -3.0])
    p0, ref = np_diffs(x.numpy())
    assert p0 == 5 and overflow_safe_fix_pos(x) == p0
    got = diffs_fix_pos(x, scope=5)
    assert got == ref and got > p0
    # without outliers the overflow-safe position already wins
    y = x[2:] * 30
    assert diffs_fix_pos(y) == np_diffs(y.numpy())[1]
    # scope 1 (the network input) never leaves the safe position
    assert diffs_fix_pos(x, scope=1) == p0


def test_activation_fix_position_is_the_mode_over_all_batches():
    assert modal_fix_pos([3, 4, 4, 3, 5]) == 3  # tie -> smallest
    assert modal_fix_pos([2, 4, 4, 6]) == 4
    q = qnn.QuantIdentity(act_quant=DPUActQuant)
    (s, ) = scalers(q)
    s.collecting = True
    expected = []
    for amp in (1.0, 1.0, 8.0, 1.0):  # one batch 8x larger
        x = torch.linspace(-amp, amp, 1001)
        q(x)
        expected.append(np_diffs(x.numpy())[1])
    assert s.history == expected and len(set(expected)) == 2
    assert s.get_fix_pos() == expected[0]


def test_weight_fix_position_by_diffs():
    conv = nn.Conv2d(4, 4, 1)
    g = torch.Generator().manual_seed(1)
    conv.weight.data = torch.randn(conv.weight.shape, generator=g) * 0.05
    conv.weight.data[0, 0] = 2.0  # outlier
    conv.bias.data = torch.randn(4, generator=g)
    net = nn.Sequential(conv)
    backend = BuiltinBackend('calib', output_dir='/nonexistent/never')
    qmod = backend.wrap('w', net, (torch.randn(1, 4, 2, 2), ))
    qmod(torch.randn(1, 4, 2, 2))
    pos = qmod.fix_positions()
    assert pos['w::w/Conv2d[0]/weight'] == np_diffs(
        conv.weight.detach().numpy(), rnd=np_half_away)[1]
    assert pos['w::w/Conv2d[0]/bias'] == np_diffs(
        conv.bias.detach().numpy(), rnd=np_half_away)[1]


def test_dpu_shift_limits():
    assert conv_shift_adjust(i=6, w=12, o=1, b=None) == (11, 1, None)
    assert conv_shift_adjust(i=2, w=3, o=7, b=None) == (3, 5, None)
    assert conv_shift_adjust(i=4, w=8, o=6, b=23) == (8, 6, 22)
    assert conv_shift_adjust(i=4, w=8, o=6, b=-5) == (7, 6, -5)
    assert conv_shift_adjust(i=4, w=8, o=6, b=5) == (8, 6, 5)


def test_dpu_shift_limits_applied_at_export(tmp_path):
    """Tiny input and weights, a huge bias: shift_cut = w + i - o > 16, so
    the weight position moves down like nndct does at export."""
    conv = nn.Conv2d(4, 4, 1)
    conv.weight.data.fill_(0.01)
    conv.bias.data.fill_(100.0)
    net = nn.Sequential(conv)
    inputs = [(torch.full((1, 4, 2, 2), 0.01), )]
    backend, qmod = calibrate_builtin(tmp_path, 's', net, inputs)
    (link, ) = qmod.convs
    assert link['input'] == 's::input_0' and link['output'] == 's::s/Conv2d[0]'
    pos = qmod.fix_positions()
    i, w, o = (pos['s::input_0'], pos['s::s/Conv2d[0]/weight'],
               pos['s::s/Conv2d[0]'])
    assert (i, o) == (12, 0) and w + i - o == 16  # was 12 + 12 - 0 = 24
    assert backend.adjustments == [
        's::s/Conv2d[0]/weight: fix position 12 -> 4 (DPU shift limits)']
    info = json.load(open(tmp_path / 'quant_info.json'))
    assert info['param']['s::s/Conv2d[0]/weight'] == [8, 4]


# ---------------------------------------------------------------------------
# graph transforms
# ---------------------------------------------------------------------------
def test_bn_folding_is_exact_in_float():
    net = randomize_bn(BEVNet())
    (x, ) = bev_inputs(1)[0]
    gm = trace_subgraph('bev', copy.deepcopy(net), (x, ))
    fold_batchnorm(gm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    convt = gm.get_submodule('deblocks.1.0')
    assert type(convt) is WrappedConvTranspose2d and convt.bias is not None
    with torch.no_grad():
        for a, b in zip(net(x), gm(x)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_leaky_relu_runs_with_dpu_slope(tmp_path):
    net = randomize_bn(BEVNet(leaky=True))
    inputs = bev_inputs(2)
    _, qmod = calibrate_builtin(tmp_path, 'bev', net, inputs)
    slopes = [m.negative_slope for m in qmod.modules()
              if isinstance(m, nn.LeakyReLU)]
    assert slopes == [LEAKY_RELU_SLOPE] == [0.1015625]
    assert net.act.negative_slope == 0.2  # the float module is untouched
    ref_dpu = copy.deepcopy(net)
    ref_dpu.act.negative_slope = LEAKY_RELU_SLOPE
    with torch.no_grad():
        out = torch.cat([o.flatten() for o in qmod(*inputs[0])])
        dpu = torch.cat([o.flatten() for o in ref_dpu(*inputs[0])])
        orig = torch.cat([o.flatten() for o in net(*inputs[0])])
    assert sqnr_db(dpu, out) > 30
    assert sqnr_db(dpu, out) > sqnr_db(orig, out) + 2

    class Functional(nn.Module):

        def forward(self, x):
            return F.leaky_relu(x, 0.2)

    backend = BuiltinBackend('calib', output_dir=str(tmp_path / 'f'))
    q = backend.wrap('f', Functional(), (torch.randn(8), ))
    x = torch.linspace(-4, 4, 64)
    torch.testing.assert_close(
        q(x), F.leaky_relu(x, LEAKY_RELU_SLOPE), atol=2**-4, rtol=0)


# ---------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------
def test_pillar_net_exact_dpu_arithmetic_and_quant_info(tmp_path):
    net = randomize_bn(PillarNet())
    inputs = pillar_inputs(3)
    _, qmod = calibrate_builtin(tmp_path, 'pe', net, inputs)
    info = json.load(open(tmp_path / 'quant_info.json'))
    assert set(info) == {'param', 'output', 'input', 'fast_finetuned',
                         'bias_corrected', 'version'}
    assert not info['fast_finetuned'] and not info['bias_corrected']
    assert list(info['param']) == [
        'pe::pe/Conv2d[conv1]/weight', 'pe::pe/Conv2d[conv1]/bias',
        'pe::pe/Conv2d[conv2]/weight', 'pe::pe/Conv2d[conv2]/bias'
    ]
    assert list(info['output']) == [
        'pe::input_0', 'pe::pe/ReLU[relu1]', 'pe::pe/cat', 'pe::pe/ReLU[relu2]'
    ]
    for section in ('param', 'output'):
        for key, (bits, pos) in info[section].items():
            assert bits == 8 and isinstance(pos, int), key
    fp = {**info['param'], **info['output']}
    assert [(c['input'], c['output']) for c in qmod.convs] == [
        ('pe::input_0', 'pe::pe/ReLU[relu1]'),
        ('pe::pe/cat', 'pe::pe/ReLU[relu2]')]

    # independent numpy reference: fold BN, quantize, 1x1 conv = einsum
    def folded(conv, bn):
        w = conv.weight.detach().double().numpy()[:, :, 0, 0]
        s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        b = (bn.bias - bn.running_mean * s).detach().double().numpy()
        return w * s.double().numpy()[:, None], b

    def layer(x, conv, bn, prefix, act_key):
        w, b = folded(conv, bn)
        wq = np_fix(w, fp[f'pe::pe/{prefix}/weight'][1], np_half_away)
        bq = np_fix(b, fp[f'pe::pe/{prefix}/bias'][1], np_half_away)
        y = np.einsum('oc,bcnp->bonp', wq, x) + bq[None, :, None, None]
        return np_fix(np.maximum(y, 0), fp[act_key][1], np_half_up)

    for (x, ) in inputs:
        v = np_fix(x.numpy(), fp['pe::input_0'][1], np_half_away)
        v = layer(v, net.conv1, net.bn1, 'Conv2d[conv1]', 'pe::pe/ReLU[relu1]')
        v = np.concatenate(
            [v, np.broadcast_to(v.max(3, keepdims=True), v.shape)], axis=1)
        v = np_fix(v, fp['pe::pe/cat'][1], np_half_up)
        v = layer(v, net.conv2, net.bn2, 'Conv2d[conv2]', 'pe::pe/ReLU[relu2]')
        ref = v.max(3, keepdims=True)
        with torch.no_grad():
            out = qmod(x).double().numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize('kind', ['pillar', 'bev'])
def test_int8_close_to_float_and_test_mode_reload_is_exact(tmp_path, kind):
    if kind == 'pillar':
        net, inputs, name = randomize_bn(PillarNet()), pillar_inputs(3), 'pe'
    else:
        net, inputs, name = randomize_bn(BEVNet()), bev_inputs(3), 'bev'
    backend, qmod = calibrate_builtin(tmp_path, name, net, inputs)
    held_out = (pillar_inputs(1, seed=7) if kind == 'pillar' else
                bev_inputs(1, seed=7))[0]
    with torch.no_grad():
        ref = as_tuple(net(*held_out))
        calib_out = as_tuple(qmod(*held_out))
    for r, o in zip(ref, calib_out):
        assert sqnr_db(r, o) > 25
    # every quantized tensor is in quant_info.json
    info = json.load(open(tmp_path / 'quant_info.json'))
    keys = set(info['param']) | set(info['output'])
    assert keys == set(qmod.tensors)
    n_convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
                  for m in net.modules())
    assert len(info['param']) == 2 * n_convs  # weight + (folded) bias
    if kind == 'bev':
        assert 'bev::bev/ModuleList[deblocks]/Sequential[1]/' \
            'WrappedConvTranspose2d[0]/weight' in info['param']
    # test mode reloads bit-exactly
    test_backend = get_backend('builtin', quant_mode='test',
                               output_dir=str(tmp_path))
    qtest = test_backend.wrap(name, copy.deepcopy(net), held_out)
    assert qtest.fix_positions() == qmod.fix_positions()
    with torch.no_grad():
        for a, b in zip(calib_out, as_tuple(qtest(*held_out))):
            assert torch.equal(a, b)


def test_test_mode_before_calib_is_a_clear_error(tmp_path):
    out_dir = tmp_path / 'quantize_result'
    backend = get_backend('builtin', quant_mode='test',
                          output_dir=str(out_dir))
    with pytest.raises(QuantStateError, match='--quant_mode calib first'):
        backend.wrap('pe', PillarNet().eval(), pillar_inputs(1)[0])
    assert isinstance(QuantStateError('x'), UserInputError)
    assert not out_dir.exists()
    out_dir.mkdir()
    with pytest.raises(QuantStateError, match='calib first'):
        backend.wrap('pe', PillarNet().eval(), pillar_inputs(1)[0])
    assert os.listdir(out_dir) == []


def test_test_mode_rejects_state_not_matching_the_module(tmp_path):
    net = randomize_bn(PillarNet())
    inputs = pillar_inputs(2)
    calibrate_builtin(tmp_path, 'pe', net, inputs)
    before = sorted(os.listdir(tmp_path))

    def test_wrap(name, module):
        return get_backend('builtin', 'test', str(tmp_path)).wrap(
            name, module, inputs[0])

    test_wrap('pe', copy.deepcopy(net))  # the same module loads
    with pytest.raises(QuantStateError, match='not calibrated'):
        test_wrap('other', copy.deepcopy(net))
    with pytest.raises(QuantStateError, match='does not match'):
        test_wrap('pe', randomize_bn(PillarNet(c2=16)))
    other_weights = copy.deepcopy(net)
    other_weights.conv1.weight.data[0, 0] += 1
    with pytest.raises(QuantStateError, match='weights'):
        test_wrap('pe', other_weights)
    # a quant_info.json from elsewhere (or edited) is refused
    info_path = tmp_path / 'quant_info.json'
    info = json.load(open(info_path))
    info['output']['pe::input_0'][1] += 1
    info_path.write_text(json.dumps(info))
    with pytest.raises(QuantStateError, match='does not belong'):
        test_wrap('pe', copy.deepcopy(net))
    assert sorted(os.listdir(tmp_path)) == before


def test_export_requires_calibration_data_and_writes_nothing(tmp_path):
    out_dir = tmp_path / 'q'
    backend = get_backend('builtin', 'calib', str(out_dir))
    with pytest.raises(QuantStateError, match='no DPU subgraph'):
        backend.export_quant_config()
    backend.wrap('pe', PillarNet().eval(), pillar_inputs(1)[0])
    with pytest.raises(QuantStateError, match='calibration data'):
        backend.export_quant_config()
    assert not out_dir.exists()


def test_export_is_atomic(tmp_path, monkeypatch):
    net = randomize_bn(PillarNet())
    inputs = pillar_inputs(2)
    calibrate_builtin(tmp_path, 'pe', net, inputs)
    old = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}

    backend = get_backend('builtin', 'calib', str(tmp_path))
    qmod = backend.wrap('pe', net, inputs[0])
    qmod(*inputs[1])

    def broken_save(obj, f, *args, **kwargs):
        f.write(b'half a file')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        backend.export_quant_config()
    now = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    assert now == old  # previous results intact, no temp files left


def test_modes_and_misuse(tmp_path):
    net = PillarNet().eval()
    backend = get_backend('builtin', 'float', str(tmp_path / 'x'))
    assert backend.wrap('pe', net, pillar_inputs(1)[0]) is net
    with pytest.raises(QuantStateError):
        backend.export_quant_config()
    with pytest.raises(UserInputError, match='quant_mode'):
        get_backend('builtin', 'train', str(tmp_path))
    with pytest.raises(UserInputError, match='backend'):
        get_backend('tensorrt', 'calib', str(tmp_path))
    calib = get_backend('builtin', 'calib', str(tmp_path / 'x'))
    with pytest.raises(UserInputError, match='name'):
        calib.wrap('../evil', net, pillar_inputs(1)[0])
    calib.wrap('pe', net, pillar_inputs(1)[0])
    with pytest.raises(QuantStateError, match='already wrapped'):
        calib.wrap('pe', net, pillar_inputs(1)[0])
    with pytest.raises(QuantStateError, match='not a module wrapped'):
        calib.fast_finetune('pe', net, pillar_inputs(1))
    assert not (tmp_path / 'x').exists()


# ---------------------------------------------------------------------------
# fast finetune: brevitas bias correction
# ---------------------------------------------------------------------------
class BiasedNet(nn.Module):
    """Weights whose rounding error is systematic: one large weight per
    output channel sets the fix position, the 63 small ones all round up by
    ~25%, and the inputs are positive -> a large mean output error."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 8, 1)
        g = torch.Generator().manual_seed(3)
        w = 0.4 / 64 * (1 + 0.05 * torch.randn(8, 64, generator=g))
        w[:, 0] = 1.0
        self.conv.weight.data = w[:, :, None, None]
        self.conv.bias.data.zero_()

    def forward(self, x):
        return self.conv(x)


def test_fast_finetune_bias_correction_reduces_error(tmp_path):
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.rand(1, 64, 8, 8, generator=g), ) for _ in range(4)]
    held_out = (torch.rand(1, 64, 8, 8, generator=g), )
    net = BiasedNet().eval()
    with torch.no_grad():
        ref = net(*held_out)
    errors = {}
    for ft in (False, True):
        out_dir = tmp_path / str(ft)
        backend, qmod = calibrate_builtin(out_dir, 'b', net, inputs,
                                          fast_finetune=ft)
        with torch.no_grad():
            errors[ft] = (qmod(*held_out) - ref).abs().mean().item()
        info = json.load(open(out_dir / 'quant_info.json'))
        assert info['fast_finetuned'] is ft and info['bias_corrected'] is ft
        test_backend = get_backend('builtin', 'test', str(out_dir))
        qtest = test_backend.wrap('b', net, held_out)
        if ft:
            test_backend.fast_finetune('b', qtest, inputs)  # loads: no-op
        else:
            with pytest.raises(QuantStateError, match='without fast'):
                test_backend.fast_finetune('b', qtest, inputs)
        with torch.no_grad():
            assert torch.equal(qtest(*held_out), qmod(*held_out))
    assert errors[True] < 0.3 * errors[False]
