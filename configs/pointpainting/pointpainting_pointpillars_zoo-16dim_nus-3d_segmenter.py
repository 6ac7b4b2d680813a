# The zoo pt_pointpainting_nuscenes mirror painted as the zoo paints: by the
# camera segmenter (semantic-fpn_r18_synthetic-cams.py, trained with
# tools/train.py; its int8 DPU version: tools/quant.py on that config), the
# argmax of its 11 classes one-hot on every point the six cameras see.
# Needs the segmenter checkpoint below (or set seg_checkpoint / pass
# --cfg-options to point at yours); the parent config paints from the
# synthetic masks instead.
_base_ = ['./pointpainting_pointpillars_zoo-16dim_nus-3d.py']

seg_config = 'configs/pointpainting/semantic-fpn_r18_synthetic-cams.py'
seg_checkpoint = 'work_dirs/segmenter/iter_1000.pth'
painting = dict(
    type='VitisPointPainting', source='segmenter', cameras=_base_.cams,
    num_classes=11, mode='onehot', keep_outside=True, min_depth=1.0,
    segmenter=dict(config=seg_config, checkpoint=seg_checkpoint))
train_pipeline = [
    painting if t['type'] == 'VitisPointPainting' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    painting if t['type'] == 'VitisPointPainting' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
