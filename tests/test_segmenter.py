"""The PointPainting camera segmenter: model, dataset, mIoU metric, config."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.optim import OptimWrapper
from mmengine.structures import BaseDataElement, PixelData
from PIL import Image

from mmdet3d.registry import DATASETS, METRICS, MODELS

import mmdet3d_vitis  # noqa: F401  (registers components)
from mmdet3d_vitis.painting.seg_dataset import SEG_CLASSES
from mmdet3d_vitis.painting.seg_metric import area_counts, iou_from_counts

CONFIG = osp.join(osp.dirname(__file__), '..', 'configs', 'pointpainting',
                  'semantic-fpn_r18_synthetic-cams.py')


def small_model(**kwargs):
    cfg = dict(type='VitisSemanticFPN', num_classes=11,
               backbone=dict(depth=18, base_channels=16),
               neck=dict(out_channels=16), head_channels=16, dropout=0.0)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def make_samples(masks):
    return [BaseDataElement(gt_sem_seg=PixelData(
        data=torch.as_tensor(m, dtype=torch.long)[None])) for m in masks]


def test_forward_modes_and_shapes():
    torch.manual_seed(0)
    model = small_model()
    x = torch.rand(2, 3, 60, 100) * 255  # not divisible by 32
    data = model.data_preprocessor(
        dict(inputs=list(x.to(torch.uint8)),
             data_samples=make_samples(torch.randint(0, 11, (2, 60, 100)))))
    logits = model(data['inputs'], mode='tensor')
    assert logits.shape == (2, 11, 60, 100)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_ce', 'acc_seg'}
    assert losses['loss_ce'].dim() == 0 and losses['loss_ce'] > 0
    model.eval()
    preds = model(**data, mode='predict')
    assert len(preds) == 2
    assert preds[0].pred_sem_seg.data.shape == (1, 60, 100)
    # predictions follow the ground truth's size (full-resolution masks)
    big = make_samples(torch.zeros(2, 120, 200, dtype=torch.long))
    preds = model(data['inputs'], big, mode='predict')
    assert preds[1].pred_sem_seg.data.shape == (1, 120, 200)


def test_predict_scores_sum_to_one():
    torch.manual_seed(0)
    model = small_model(test_input_size=(32, 64))
    model.train()
    images = torch.rand(2, 3, 45, 80) * 255
    scores = model.predict_scores(images)
    assert scores.shape == (2, 11, 45, 80)
    assert torch.allclose(scores.sum(1), torch.ones(2, 45, 80), atol=1e-5)
    assert (scores >= 0).all()
    assert model.training  # mode restored
    bgr = model.predict_scores(images.flip(1), bgr=True)
    assert torch.allclose(bgr, scores, atol=1e-6)
    with pytest.raises(Exception, match='B, 3, H, W'):
        model.predict_scores(torch.rand(3, 45, 80))


def test_class_weight_length_checked():
    with pytest.raises(Exception, match='class_weight'):
        small_model(class_weight=[1.0, 2.0])


def test_training_steps_reduce_loss():
    torch.manual_seed(0)
    model = small_model(class_weight=[1.0] + [2.0] * 10)
    masks = torch.zeros(2, 64, 96, dtype=torch.long)
    masks[0, 10:40, 20:60] = 1
    masks[1, 30:60, 50:90] = 8
    images = torch.full((2, 3, 64, 96), 90, dtype=torch.uint8)
    images[0, :, 10:40, 20:60] = torch.tensor([200, 30, 30])[:, None, None]
    images[1, :, 30:60, 50:90] = torch.tensor([30, 30, 200])[:, None, None]
    data = dict(inputs=list(images), data_samples=make_samples(masks))
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-2))
    model.train()
    losses = [float(torch.as_tensor(
        model.train_step(data, wrapper)['loss_ce']).detach())
              for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_miou_metric_matches_hand_computation():
    # image 1 (255 = ignored):      image 2:
    #   pred  0 1 1     gt  0 0 1     pred  2 2     gt  2 0
    #         1 1 0         1 255 0
    pred1 = np.array([[0, 1, 1], [1, 1, 0]])
    gt1 = np.array([[0, 0, 1], [1, 255, 0]])
    pred2 = np.array([[2, 2]])
    gt2 = np.array([[2, 0]])
    # class 0: inter 2 (two (0,0) px), pred 2, gt 4 -> union 4 -> 0.5
    # class 1: inter 2, pred 3 (ignored px excluded), gt 2 -> 2/3
    # class 2: inter 1, pred 2, gt 1 -> 0.5; class 3 absent from gt
    expected = {0: 0.5, 1: 2 / 3, 2: 0.5}
    names = ('bg', 'a', 'b', 'c')
    metric = METRICS.build(dict(type='VitisSegIoUMetric',
                                class_names=names))
    evaluator = Evaluator(metric)
    samples = []
    for pred, gt in ((pred1, gt1), (pred2, gt2)):
        s = make_samples([gt])[0]
        s.pred_sem_seg = PixelData(data=torch.as_tensor(pred)[None])
        samples.append(s)
    evaluator.process(samples)
    metrics = evaluator.evaluate(2)
    for c, iou in expected.items():
        assert metrics[f'IoU/{names[c]}'] == pytest.approx(iou)
    assert 'IoU/c' not in metrics
    assert metrics['mIoU'] == pytest.approx(np.mean(list(expected.values())))
    assert metrics['aAcc'] == pytest.approx(5 / 7)
    counts = area_counts(torch.as_tensor(pred1), torch.as_tensor(gt1), 4)
    assert counts.tolist() == [[2, 2, 0, 0], [2, 3, 0, 0], [3, 2, 0, 0]]
    assert iou_from_counts(counts, names)['IoU/a'] == pytest.approx(2 / 3)


def test_dataset_pairs_images_with_their_masks(tiny_synthetic_root):
    from mmengine.fileio import load
    root = tiny_synthetic_root
    pipeline = [dict(type='LoadCamImageAndMask', img_scale=(200, 112)),
                dict(type='PackCamSegInputs')]
    dataset = DATASETS.build(dict(
        type='VitisCamSegDataset', data_root=root,
        ann_file='nuscenes_infos_val.pkl', pipeline=pipeline))
    infos = load(osp.join(root, 'nuscenes_infos_val.pkl'))['data_list']
    assert len(dataset) == 6 * len(infos)
    assert dataset.metainfo['classes'] == SEG_CLASSES
    for idx in (0, 5, len(dataset) - 1):
        info = dataset.get_data_info(idx)
        cam = info['cam']
        sample = infos[idx // 6]
        assert info['img_path'] == osp.join(
            root, 'samples', cam, sample['images'][cam]['img_path'])
        assert info['seg_map_path'] == osp.join(
            root, 'seg_masks', cam,
            sample['images'][cam]['img_path'][:-4] + '.png')
        item = dataset[idx]
        assert item['inputs'].shape == (3, 112, 200)
        assert item['inputs'].dtype == torch.uint8
        gt = item['data_samples'].gt_sem_seg.data
        assert gt.shape == (1, 112, 200)
        full = np.asarray(Image.open(info['seg_map_path']))
        ref = np.asarray(Image.fromarray(full).resize((200, 112),
                                                      Image.NEAREST))
        assert np.array_equal(gt[0].numpy(), ref)
    # the first six entries are the six cameras of the first sample
    cams = {dataset.get_data_info(i)['cam'] for i in range(6)}
    assert len(cams) == 6


def test_config_trains_and_evaluates(tiny_synthetic_root, tmp_path):
    import subprocess
    import sys
    root = tiny_synthetic_root.rstrip('/') + '/'
    tool = osp.join(osp.dirname(__file__), '..', 'tools', 'train.py')
    options = [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        'train_dataloader.dataset.max_samples=2',
        'val_dataloader.dataset.max_samples=1',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'model.backbone.base_channels=16', 'model.neck.out_channels=16',
        'model.head_channels=16', 'train_dataloader.batch_size=2']
    result = subprocess.run(
        [sys.executable, tool, CONFIG, '--work-dir', str(tmp_path),
         '--cfg-options', *options],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-3000:])
    assert osp.isfile(tmp_path / 'iter_2.pth')
    log = result.stdout + result.stderr
    assert 'mIoU' in log and 'IoU/background' in log

    test_tool = osp.join(osp.dirname(__file__), '..', 'tools', 'test.py')
    out_json = tmp_path / 'metrics.json'
    result = subprocess.run(
        [sys.executable, test_tool, CONFIG, str(tmp_path / 'iter_2.pth'),
         '--work-dir', str(tmp_path / 'test'), '--out-json', str(out_json),
         '--cfg-options', *options],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-3000:])
    import json
    metrics = json.load(open(out_json))['metrics']
    assert 0.0 <= metrics['mIoU'] <= 1.0
