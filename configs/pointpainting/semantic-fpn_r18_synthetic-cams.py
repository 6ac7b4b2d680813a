# Camera segmenter for PointPainting: Semantic FPN on mmdet's ResNet-18 + FPN
# (VitisSemanticFPN, no mmseg needed), trained from scratch on the synthetic
# camera images and the class masks the generator writes
# (tools/create_synthetic_nuscenes.py -> data/synthetic/seg_masks/CAM_*).
# 11 classes: background + the ten nuScenes detection classes.
#
# Sized for a 2-core CPU: images are decoded at 1/4 scale (400 x 225), the
# head runs at stride 4 with 64 channels; 1000 iterations of 4 images (~2
# epochs of the 1920 train camera images) took 17 minutes on one thread of a
# shared 2-core CPU (0.8-2.2 s/iteration with the load), validation another
# 2.5. Validation scores the full-resolution (1600 x 900) val masks, the
# logits being upsampled to them; that run reached mIoU 0.876.
#
#   CFG=configs/pointpainting/semantic-fpn_r18_synthetic-cams.py
#   python tools/train.py $CFG --work-dir work_dirs/segmenter
#   python tools/test.py $CFG work_dirs/segmenter/iter_1000.pth
custom_imports = dict(imports=['mmdet3d_vitis'], allow_failed_imports=False)
default_scope = 'mmdet3d'

data_root = 'data/synthetic/'
img_scale = (400, 225)  # (w, h)
num_classes = 11
max_iters = 1000
lr = 1e-3

model = dict(
    type='VitisSemanticFPN',
    num_classes=num_classes,
    backbone=dict(depth=18, base_channels=64, out_indices=(0, 1, 2, 3)),
    neck=dict(out_channels=64),
    head_channels=64,
    dropout=0.1,
    # Background covers ~82% of the pixels, the small classes ~0.1% each;
    # a mild (roughly frequency^-0.3) weighting keeps them from collapsing
    # into background without flooding it with false positives.
    class_weight=[1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0],
    test_input_size=(img_scale[1], img_scale[0]),
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]))

train_pipeline = [
    dict(type='LoadCamImageAndMask', img_scale=img_scale, seg_scale='img',
         cache=True),
    dict(type='mmcv.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackCamSegInputs'),
]
val_pipeline = [
    # full-resolution masks: the model upsamples its logits to them
    dict(type='LoadCamImageAndMask', img_scale=img_scale, seg_scale=None),
    dict(type='PackCamSegInputs'),
]

train_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='VitisCamSegDataset', data_root=data_root,
                 ann_file='nuscenes_infos_train.pkl',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='VitisCamSegDataset', data_root=data_root,
                 ann_file='nuscenes_infos_val.pkl', pipeline=val_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='VitisSegIoUMetric')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', power=0.9, eta_min=lr * 0.01, by_epoch=False,
         begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
