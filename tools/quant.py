"""Quantize a detector for the DPU: the Vitis AI model zoo's flow.

    python tools/quant.py CONFIG CHECKPOINT [--quant_mode {float,calib,test}]
        [--calib_len 500] [--calib_sample_method {random,sequential}]
        [--seed 0] [--quant_dir quantize_result] [--bitwidth 8]
        [--fast_finetune] [--fft_len 300] [--backend {auto,nndct,builtin}]
        [--dump_xmodel [--deploy_dir DIR] [--deploy_check_frames 3]]
        [--inspect] [--work-dir DIR] [--cfg-options key=value ...]

``--quant_mode calib`` (default) calibrates on ``--calib_len`` frames of the
train split (test pipeline) and writes QUANT_DIR/quant_info.json, the
backend's state and QUANT_DIR/calib.json; ``--quant_mode test`` evaluates
the float and the int8 model with the config's test evaluator and writes
QUANT_DIR/report.json (with ``--dump_xmodel`` also the deploy folder
QUANT_DIR/deploy or ``--deploy_dir``: ``pillar_encoder_int.onnx``,
``bev_int.onnx`` and ``pipeline.json``, builtin backend only, then its
deploy check against the PyTorch int8 model: QUANT_DIR/deploy_check.json);
``--quant_mode float`` evaluates the float
partitioned model (QUANT_DIR/float.json); ``--inspect`` prints the per-layer
DPU/CPU table on the first test frame (QUANT_DIR/inspect.json) and stops.
Every flag is accepted with underscores (as in the zoo) or dashes.  See
mmdet3d_vitis/quantization/quant_runner.py for what each step does.

A config whose model is the PointPainting camera segmenter
(``VitisSemanticFPN``) is quantized as one DPU subgraph (image in, stride-4
logits out) with the same flags: report.json holds float vs int8 mIoU and
per-class IoU, ``--dump_xmodel`` writes ``segmenter_int.onnx`` +
``segmenter.json``; see mmdet3d_vitis/quantization/segmenter_quant.py.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from mmengine.config import DictAction  # noqa: E402

import mmdet3d_vitis  # noqa: F401,E402  (registers components)
from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.quantization.backends import BACKEND_CHOICES  # noqa: E402
from mmdet3d_vitis.quantization.quant_runner import (  # noqa: E402
    QUANT_MODES, SAMPLE_METHODS, QuantOptions, run_quant)


def _flag(name):
    """``--name`` plus its other spelling (underscores <-> dashes)."""
    other = name.replace('_', '-') if '_' in name else name.replace('-', '_')
    return [f'--{name}'] + ([f'--{other}'] if other != name else [])


def parse_args(argv=None):
    defaults = QuantOptions(config='', checkpoint='')
    parser = argparse.ArgumentParser(
        description='Quantize a 3D detector for Xilinx/AMD DPUs (int8)')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='float checkpoint file')
    parser.add_argument(
        *_flag('quant_mode'), dest='quant_mode', choices=QUANT_MODES,
        default=defaults.quant_mode,
        help='float: evaluate the float partitioned model; calib: calibrate '
        'and write the quantization state; test: evaluate float and int8')
    parser.add_argument(
        *_flag('calib_len'), dest='calib_len', type=int,
        default=defaults.calib_len,
        help='calibration frames from the train split (capped at its size)')
    parser.add_argument(
        *_flag('calib_sample_method'), dest='calib_sample_method',
        choices=SAMPLE_METHODS, default=defaults.calib_sample_method,
        help='random (seeded by --seed) or the first frames')
    parser.add_argument('--seed', type=int, default=defaults.seed,
                        help='seed of the random calibration subset')
    parser.add_argument(
        *_flag('quant_dir'), dest='quant_dir', default=defaults.quant_dir,
        help='where calib writes and test reads the quantization results')
    parser.add_argument('--bitwidth', type=int, default=defaults.bitwidth,
                        help='bits of weights and activations (DPU: 8)')
    parser.add_argument(
        *_flag('fast_finetune'), dest='fast_finetune', action='store_true',
        help='calib: fast finetune (nndct: AdaQuant; builtin: bias '
        'correction) before calibration; test: use its parameters')
    parser.add_argument(
        *_flag('fft_len'), dest='fft_len', type=int, default=defaults.fft_len,
        help='frames for fast finetune, picked like the calibration frames '
        '(same seed): a subset of them when fft_len <= calib_len')
    parser.add_argument(
        *_flag('dump_xmodel'), '--deploy', dest='dump_xmodel',
        action='store_true',
        help='test mode, builtin backend: also write the deploy folder '
        '(one int8 QDQ ONNX file per DPU subgraph + pipeline.json, run by '
        'mmdet3d_vitis.deploy.Pipeline); the nndct xmodel export is not '
        'implemented yet')
    parser.add_argument(
        *_flag('deploy_dir'), dest='deploy_dir', default=None,
        help='where --dump_xmodel writes (default QUANT_DIR/deploy)')
    parser.add_argument(
        *_flag('deploy_check_frames'), dest='deploy_check_frames', type=int,
        default=defaults.deploy_check_frames,
        help='with --dump_xmodel: check the deploy folder against the '
        'PyTorch int8 model on this many test frames (subgraph outputs in '
        'LSBs, end-to-end detections) and write QUANT_DIR/deploy_check.json;'
        ' 0 skips the check')
    parser.add_argument('--backend', choices=BACKEND_CHOICES,
                        default=defaults.backend,
                        help='auto: nndct when pytorch_nndct imports, else '
                        'builtin (brevitas); in test mode the backend that '
                        'calibrated QUANT_DIR')
    parser.add_argument(
        '--inspect', action='store_true',
        help='print the per-layer DPU/CPU table on the first test frame, '
        'write QUANT_DIR/inspect.json and stop')
    parser.add_argument(
        *_flag('work-dir'), dest='work_dir',
        help='mmengine Runner logs of the evaluations (default '
        'work_dirs/<config name>)')
    parser.add_argument(
        *_flag('cfg-options'), dest='cfg_options', nargs='+',
        action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=1')
    return parser.parse_args(argv)


def options_from_args(args) -> QuantOptions:
    return QuantOptions(**vars(args))


def main(argv=None):
    return run_quant(options_from_args(parse_args(argv)))


if __name__ == '__main__':
    run_cli(main)
