"""tools/quant.py on the PointPainting camera segmenter (one DPU subgraph).

A tiny VitisSemanticFPN (8 channels) on a few generated 96 x 64 images
with 192 x 128 masks (the logits are upsampled to them on the CPU), run
through ``tools/quant.py``'s ``main``: calib, test with --dump_xmodel.
"""
import json
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.painting.seg_dataset import CAMERAS

from conftest import REPO, randomize_bn

CONFIG = osp.join(REPO, 'configs', 'pointpainting',
                  'semantic-fpn_r18_synthetic-cams.py')

IMG_WH, MASK_WH = (96, 64), (192, 128)
TINY = ['model.backbone.base_channels=8', 'model.neck.out_channels=8',
        'model.head_channels=8']


def _write_split(root, split, samples, rng):
    data_list = []
    for s in range(samples):
        images = {}
        for cam in CAMERAS:
            name = f'{split}_{s}_{cam}.jpg'
            images[cam] = dict(img_path=name)
            mask = np.zeros(MASK_WH[::-1], np.uint8)
            img = rng.integers(0, 60, MASK_WH[::-1] + (3, ), dtype=np.uint8)
            for _ in range(4):  # class boxes, brighter than background
                c = int(rng.integers(1, 11))
                x, y = rng.integers(0, MASK_WH[0] - 40), rng.integers(
                    0, MASK_WH[1] - 30)
                mask[y:y + 30, x:x + 40] = c
                img[y:y + 30, x:x + 40] = (20 * c, 255 - 20 * c, 128)
            for sub, arr, ext in (('samples', img, '.jpg'),
                                  ('seg_masks', mask, '.png')):
                folder = osp.join(root, sub, cam)
                Image.fromarray(arr).save(
                    osp.join(folder, name[:-4] + ext))
        data_list.append(dict(token=f'{split}{s}', images=images))
    with open(osp.join(root, f'nuscenes_infos_{split}.pkl'), 'wb') as f:
        pickle.dump(dict(metainfo={}, data_list=data_list), f)


@pytest.fixture(scope='module')
def seg_setup(tmp_path_factory):
    """Data root, tiny checkpoint and the common options."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmdet3d.registry import MODELS
    import os
    root = str(tmp_path_factory.mktemp('segdata'))
    for sub in ('samples', 'seg_masks'):
        for cam in CAMERAS:
            os.makedirs(osp.join(root, sub, cam))
    rng = np.random.default_rng(0)
    _write_split(root, 'train', 2, rng)
    _write_split(root, 'val', 1, rng)
    options = TINY + [
        f'{split}_dataloader.dataset.data_root={root}/'
        for split in ('train', 'val', 'test')] + [
        'test_dataloader.dataset.pipeline.0.img_scale=(96,64)',
        'test_dataloader.dataset.pipeline.0.seg_scale=(192,128)',
        'test_dataloader.batch_size=2']
    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    model_cfg = cfg.model
    model_cfg.backbone.base_channels = 8
    model_cfg.neck.out_channels = 8
    model_cfg.head_channels = 8
    model = randomize_bn(MODELS.build(model_cfg))
    ckpt = str(tmp_path_factory.mktemp('segckpt') / 'tiny.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'experiment_name': 'tiny_segmenter'}}, ckpt)
    return dict(root=root, ckpt=ckpt, options=options,
                work=str(tmp_path_factory.mktemp('segwork')))


def _argv(setup, quant_dir, *extra):
    return [CONFIG, setup['ckpt'], '--quant_dir', quant_dir,
            '--work-dir', setup['work'], *extra,
            '--cfg-options', *setup['options']]


def test_calib_test_export(seg_setup, quant_tool, tmp_path):
    from mmdet3d_vitis.quantization.backends.onnx_export import (
        compare_in_lsb, run_onnxruntime)
    from mmdet3d_vitis.quantization.quant_runner import (
        build_dataset, calib_dataset_cfg, load_quant_config)
    from mmdet3d_vitis.quantization.segmenter_quant import (
        SEGMENTER, VitisPartitionedSegmenter, load_float_segmenter,
        load_test_segmenter)
    qdir = str(tmp_path / 'int8')
    info = quant_tool.main(_argv(seg_setup, qdir, '--quant_mode', 'calib',
                                 '--calib_len', '8'))
    assert info['model'] == 'segmenter' and info['subgraphs'] == [SEGMENTER]
    assert info['calib_len'] == 8 and info['non_dpu_ops'] == []
    assert info['input_shape'] == [1, 3, 64, 96]
    assert info['logits_shape'] == [1, 11, 16, 24]
    assert info['dpu_ops']['interpolate(bilinear)'] > 0
    assert osp.isfile(osp.join(qdir, 'quant_info.json'))

    report = quant_tool.main(_argv(
        seg_setup, qdir, '--quant_mode', 'test', '--dump_xmodel',
        '--deploy_check_frames', '2'))
    saved = json.load(open(osp.join(qdir, 'report.json')))
    assert saved['float']['mIoU'] == report['float']['mIoU']
    for which in ('float', 'int8'):
        assert 0.0 <= report[which]['mIoU'] <= 1.0
        assert 'background' in report[which]['per_class_IoU']
    assert report['delta']['mIoU'] == pytest.approx(
        report['int8']['mIoU'] - report['float']['mIoU'])
    assert report['deploy_check']['ok']
    assert report['deploy_check']['max_abs_lsb'] <= 1

    # the int8 model: on the DPU grids, near the float logits, not equal
    opts = quant_tool.options_from_args(quant_tool.parse_args(
        _argv(seg_setup, qdir, '--quant_mode', 'test')))
    cfg = load_quant_config(opts)
    segmenter = load_float_segmenter(cfg, seg_setup['ckpt'])
    model, backend, qmod, calib, _ = load_test_segmenter(opts, segmenter,
                                                         (64, 96))
    dataset = build_dataset(calib_dataset_cfg(cfg))
    x = model.data_preprocessor(
        dict(inputs=[dataset[i]['inputs'] for i in range(3)]))['inputs']
    float_model = VitisPartitionedSegmenter(segmenter, (64, 96)).eval()
    with torch.no_grad():
        ref = segmenter(x, mode='tensor')
        assert torch.equal(float_model(x), ref)  # same float arithmetic
        got = model(x)
    delta = (got - ref).abs()
    assert delta.max() > 0
    assert delta.mean() < 0.1 * ref.abs().mean() + 1e-6
    assert delta.max() < 0.5 * ref.abs().max()

    # every activation scale is a power of two: values on 2**-fix_pos
    pos = qmod.fix_positions()
    assert all(isinstance(p, int) for p in pos.values())
    seen = {}
    hooks = []
    for key, (kind, path) in qmod._tensors.items():
        if kind in ('input', 'act'):
            mod = qmod.gm.get_submodule(path.split('.act_quant.')[0])

            def hook(_m, _a, out, key=key):
                seen[key] = out.detach().double() * 2.0**pos[key]
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        qmod(x)
    for h in hooks:
        h.remove()
    assert len(seen) > 20
    for key, v in seen.items():
        assert torch.equal(v, torch.round(v)), key
        assert v.abs().max() <= 128, key

    # the exported ONNX file: checker, onnxruntime vs fake quant <= 1 LSB
    import onnx
    deploy = osp.join(qdir, 'deploy')
    manifest = json.load(open(osp.join(deploy, 'segmenter.json')))
    path = osp.join(deploy, manifest['file'])
    onnx.checker.check_model(path, full_check=True)
    x_in = torch.round(x * 2.0**pos[f'{SEGMENTER}::input_0']) * 2.0**-pos[
        f'{SEGMENTER}::input_0']
    for one in x_in.split(1):  # the DPU graph takes one image
        with torch.no_grad():
            fq = qmod(one)
        cmp = compare_in_lsb([fq], run_onnxruntime(path, (one, )),
                             [manifest['outputs'][0]['scale']])
        assert cmp[0]['max_abs_lsb'] <= 1
    assert manifest['input_shape'] == [1, 3, 64, 96]
    check = json.load(open(osp.join(qdir, 'deploy_check.json')))
    assert check['ok'] and check['frames'] == [0, 1]


def test_bad_inputs(seg_setup, quant_tool, tmp_path):
    from mmdet3d_vitis.quantization.backends import QuantStateError
    with pytest.raises(QuantStateError, match='calib'):
        quant_tool.main(_argv(seg_setup, str(tmp_path / 'none'),
                              '--quant_mode', 'test'))
    assert not osp.exists(tmp_path / 'none' / 'report.json')
    with pytest.raises(UserInputError, match='missing.pth'):
        quant_tool.main([CONFIG, str(tmp_path / 'missing.pth'),
                         '--quant_dir', str(tmp_path / 'q'),
                         '--cfg-options', *seg_setup['options']])
    assert not osp.exists(tmp_path / 'q')


def test_partition_equals_float_segmenter():
    """The traceable DPU graph + CPU steps give the segmenter's logits and
    predictions, also for sizes not divisible by 32 (extra resizes)."""
    from mmengine.structures import BaseDataElement, PixelData

    from mmdet3d.registry import MODELS
    from mmdet3d_vitis.quantization.segmenter_quant import (
        VitisPartitionedSegmenter, segmenter_ops)
    torch.manual_seed(0)
    segmenter = randomize_bn(MODELS.build(dict(
        type='VitisSemanticFPN', num_classes=11,
        backbone=dict(depth=18, base_channels=8), neck=dict(out_channels=8),
        head_channels=8)))
    model = VitisPartitionedSegmenter(segmenter, (60, 100)).eval()
    assert not segmenter.backbone.training  # shared modules left in eval
    assert model.float_net.level_sizes[1:] == [(15, 25)] * 3
    x = torch.randn(2, 3, 60, 100)
    samples = [BaseDataElement(gt_sem_seg=PixelData(
        data=torch.zeros(1, 120, 200, dtype=torch.long))) for _ in range(2)]
    with torch.no_grad():
        assert torch.equal(model(x), segmenter(x, mode='tensor'))
        ours = model(x, [s.clone() for s in samples], mode='predict')
        ref = segmenter(x, [s.clone() for s in samples], mode='predict')
    for a, b in zip(ours, ref):
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
    ops = segmenter_ops(model.float_net)
    assert ops['interpolate(bilinear)'] == 6 + 3  # 2x stages + size fixes
    with pytest.raises(UserInputError, match='60 x 100'):
        model(torch.randn(1, 3, 64, 96))


def test_inspect_and_float_modes(seg_setup, quant_tool, tmp_path):
    qdir = str(tmp_path / 'q')
    out = quant_tool.main(_argv(seg_setup, qdir, '--inspect'))
    assert out['subgraphs'] == ['segmenter']
    assert out['dpu_ops']['Conv2d'] > 20
    assert osp.isfile(osp.join(qdir, 'inspect.json'))
    out = quant_tool.main(_argv(seg_setup, qdir, '--quant_mode', 'float'))
    assert 0.0 <= out['float_partitioned']['mIoU'] <= 1.0
    assert osp.isfile(osp.join(qdir, 'float.json'))
