# Mirror of the Vitis AI model zoo's pt_pointpillars_nuscenes_40000_64_108G
# on mmdet3d 1.4: SECOND [3, 5, 5] -> SECONDFPN [128, 128, 128] ->
# Anchor3DHead with 7 anchor sizes x 2 rotations over 10 classes, all of
# which the stock mmdet3d SECFPN nuScenes config below already provides
# (voxel 0.25 x 0.25 x 8, range +-50 m, 64 points per pillar,
# 30000 / 40000 pillars for train / test).
#
# What differs from the stock config:
# * points carry 5 features (x, y, z, intensity, dt): the stock
#   LoadPointsFromMultiSweeps keeps (x, y, z, dt) only;
# * the pillar encoder is PointPillars' single-layer PillarFeatureNet
#   (linear + BN + ReLU + max over points), the layout the zoo runs as DPU
#   model 0 (1x1 convolutions on a (1, C, pillars, points) tensor).
_base_ = ['mmdet3d::pointpillars/pointpillars_hv_secfpn_sbn-all_8xb4-2x_nus-3d.py']

custom_imports = dict(imports=['mmdet3d_vitis'], allow_failed_imports=False)

point_dims = [0, 1, 2, 3, 4]  # x, y, z, intensity, dt (replaces the ring)

model = dict(
    pts_voxel_encoder=dict(
        _delete_=True,
        type='PillarFeatureNet',
        in_channels=len(point_dims),
        feat_channels=[64],
        with_distance=False,
        with_cluster_center=True,
        with_voxel_center=True,
        voxel_size=_base_.voxel_size,
        point_cloud_range=_base_.point_cloud_range,
        norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01),
        legacy=False))

train_pipeline = _base_.train_pipeline
train_pipeline[1].use_dim = point_dims
test_pipeline = _base_.test_pipeline
test_pipeline[1].use_dim = point_dims

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
