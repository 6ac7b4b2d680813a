"""The nndct backend (vai_q_pytorch).

``pytorch_nndct`` ships only in the Vitis AI docker image.  Without it the
backend must refuse clearly and write nothing; with it (inside the docker)
the contract tests below run the real quantizer.  It is never faked here.
"""
import json
import os

import pytest
import torch
from torch import nn

from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.quantization.backends import (BackendUnavailableError,
                                                 BuiltinBackend,
                                                 NndctBackend,
                                                 QuantStateError,
                                                 get_backend,
                                                 nndct_import_error)
from mmdet3d_vitis.quantization.backends.nndct import rename_nndct_key

NNDCT_ERROR = nndct_import_error()
requires_nndct = pytest.mark.skipif(
    NNDCT_ERROR is not None,
    reason=f'pytorch_nndct (vai_q_pytorch) does not import ({NNDCT_ERROR}); '
    'it is only available inside the Vitis AI docker image')
without_nndct = pytest.mark.skipif(
    NNDCT_ERROR is None, reason='pytorch_nndct is installed here')


@without_nndct
def test_auto_picks_builtin_without_nndct(tmp_path):
    backend = get_backend('auto', quant_mode='calib',
                          output_dir=str(tmp_path / 'q'))
    assert isinstance(backend, BuiltinBackend)
    assert not (tmp_path / 'q').exists()


@without_nndct
@pytest.mark.parametrize('mode', ['calib', 'test', 'float'])
def test_nndct_without_pytorch_nndct_is_a_clear_error(tmp_path, mode):
    out_dir = tmp_path / 'quantize_result'
    with pytest.raises(BackendUnavailableError) as info:
        get_backend('nndct', quant_mode=mode, output_dir=str(out_dir))
    message = str(info.value)
    assert isinstance(info.value, UserInputError)
    assert 'pytorch_nndct' in message
    assert 'Vitis AI docker' in message
    assert '--backend builtin' in message
    with pytest.raises(BackendUnavailableError, match='Vitis AI docker'):
        NndctBackend(quant_mode=mode, output_dir=str(out_dir))
    assert not out_dir.exists()
    assert os.listdir(tmp_path) == []


def test_rename_nndct_key():
    assert rename_nndct_key('Net::Net/Conv2d[conv]/weight', 'bev') == \
        'bev::bev/Conv2d[conv]/weight'
    assert rename_nndct_key('Net::input_0', 'bev') == 'bev::input_0'
    assert rename_nndct_key('Net::Net', 'bev') == 'bev::bev'
    assert rename_nndct_key('Net::NetX/y', 'bev') == 'bev::NetX/y'


# ---------------------------------------------------------------------------
# contract, with the real pytorch_nndct (Vitis AI docker only)
# ---------------------------------------------------------------------------
class SmallConvNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        return self.conv2(self.relu1(self.bn1(self.conv1(x))))


def _inputs(n=4):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(1, 4, 16, 16, generator=g), ) for _ in range(n)]


@requires_nndct
def test_nndct_auto_picks_nndct(tmp_path):
    backend = get_backend('auto', 'calib', str(tmp_path))
    assert isinstance(backend, NndctBackend)


@requires_nndct
def test_nndct_test_before_calib_is_a_clear_error(tmp_path):
    backend = get_backend('nndct', 'test', str(tmp_path / 'q'))
    with pytest.raises(QuantStateError, match='calib first'):
        backend.wrap('net', SmallConvNet().eval(), _inputs(1)[0])


@requires_nndct
def test_nndct_calib_then_test(tmp_path):
    torch.manual_seed(0)
    net = SmallConvNet().eval()
    inputs = _inputs()
    out_dir = str(tmp_path / 'quantize_result')
    calib = get_backend('nndct', 'calib', out_dir)
    qmod = calib.wrap('net', net, inputs[0])
    with torch.no_grad():
        for args in inputs:
            qmod(*args)
    path = calib.export_quant_config()
    assert path == os.path.join(out_dir, 'quant_info.json')
    assert os.path.isfile(os.path.join(out_dir, 'net', 'quant_info.json'))
    info = json.load(open(path))
    assert info['param'] and info['output']
    for section in ('param', 'output'):
        for key, (bits, pos) in info[section].items():
            assert key.startswith('net::') and bits == 8
            assert isinstance(pos, int)

    test = get_backend('nndct', 'test', out_dir)
    qtest = test.wrap('net', net, inputs[0])
    with torch.no_grad():
        ref, out = net(*inputs[0]), qtest(*inputs[0])
    sqnr = 10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum())
    assert sqnr > 25
