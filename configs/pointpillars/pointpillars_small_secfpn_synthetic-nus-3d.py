# The zoo PointPillars mirror shrunk for a 2-core CPU and trained on the
# synthetic nuScenes-format scenes (tools/create_synthetic_nuscenes.py):
# 0.5 m pillars (200 x 200 BEV grid), narrower layers, fewer sweeps. Same
# component types and data flow as the mirror, so everything that partitions,
# quantizes and deploys the mirror does the same here.
_base_ = ['./pointpillars_zoo-40000x64_secfpn_nus-3d.py']

data_root = 'data/synthetic/'
voxel_size = [0.5, 0.5, 8]
sweeps_num = 2
max_epochs = 10
lr = 0.003
# The synthetic set has the v1.0-mini layout and split, so NuScenesMetric
# must evaluate mini_val; the dataset class defaults to v1.0-trainval.
metainfo = dict(classes=_base_.class_names, version='v1.0-mini')

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(
            max_num_points=32, voxel_size=voxel_size,
            max_voxels=(16000, 20000))),
    pts_voxel_encoder=dict(feat_channels=[32], voxel_size=voxel_size),
    pts_middle_encoder=dict(in_channels=32, output_shape=[200, 200]),
    pts_backbone=dict(
        in_channels=32, layer_nums=[1, 2, 2], out_channels=[32, 64, 128]),
    # Head on a 50 x 50 map (2 m cells): a quarter of the anchors, so
    # anchor assignment and the loss fit the CPU budget.
    pts_neck=dict(
        in_channels=[32, 64, 128], out_channels=[64, 64, 64],
        upsample_strides=[0.5, 1, 2]),
    pts_bbox_head=dict(in_channels=192, feat_channels=192))

train_pipeline = _base_.train_pipeline
train_pipeline[1].sweeps_num = sweeps_num
test_pipeline = _base_.test_pipeline
test_pipeline[1].sweeps_num = sweeps_num

train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         T_max=max_epochs, eta_min=lr * 0.01)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs,
                    max_keep_ckpts=1))
