# The 6th AI Edge Contest reference PointPainting model (second.pytorch,
# configs/nuscenes/pointpainting.config) ported onto mmdet3d: SECOND with the
# spconv middle SpMiddleFHD, on painted points of the front camera, car and
# pedestrian.  See configs/pointpainting/README.md for the module-by-module
# mapping.  Data: the contest's nuScenes-format layout (here the synthetic
# set, whose camera masks paint the points; point a real contest set at
# data_root and swap the painting source for a segmenter).
_base_ = [
    'mmdet3d::_base_/models/second_hv_secfpn_kitti.py',
    'mmdet3d::_base_/datasets/nus-3d.py',
    'mmdet3d::_base_/schedules/cyclic-40e.py',
    'mmdet3d::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdet3d_vitis'], allow_failed_imports=False)

data_root = 'data/synthetic/'
class_names = ['car', 'pedestrian']
# reference: range [0, -49.6, -5, 49.6, 49.6, 3], voxel 0.05 x 0.05 x 0.2,
# in a frame whose x axis looks forward.  nuScenes' LIDAR_TOP frame (and the
# synthetic set's) looks forward along +y, so the same front half-space is
# x in [-49.6, 49.6], y in [0, 49.6] here: sparse shape [41, 992, 1984] and
# a 124 x 248 BEV map, the reference's 248 x 124 transposed.
point_cloud_range = [-49.6, 0, -5, 49.6, 49.6, 3]
voxel_size = [0.05, 0.05, 0.2]
# painted points: x, y, z, intensity + background / car / person scores
painting = dict(
    type='VitisPointPainting', source='masks', cameras=['CAM_FRONT'],
    num_classes=3, class_map={0: 1, 7: 2},  # mask labels: nuScenes order
    mask_root=data_root + 'seg_masks', min_depth=1.0)
num_point_features = 7
metainfo = dict(classes=class_names, version='v1.0-mini')
input_modality = dict(use_lidar=True, use_camera=True)
cams = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
        'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
data_prefix = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                   **{cam: f'samples/{cam}' for cam in cams})

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(
            max_num_points=5, point_cloud_range=point_cloud_range,
            voxel_size=voxel_size, max_voxels=(30000, 60000))),
    voxel_encoder=dict(
        _delete_=True, type='VitisRadiusVFE',
        num_features=num_point_features),
    # SpMiddleFHD: SubM(6->16) + SubM(16); SpConv(s2) + 2 SubM(32);
    # SpConv(s2) + 3 SubM(64); SpConv(s2, pad (0, 1, 1)) + 3 SubM(64);
    # SpConv(64, k (3, 1, 1), s (2, 1, 1)); BN1d(eps 1e-3, momentum 0.01)
    middle_encoder=dict(
        in_channels=num_point_features - 1,
        sparse_shape=[41, 992, 1984],
        norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01),
        base_channels=16,
        output_channels=64,
        encoder_channels=((16, ), (32, 32, 32), (64, 64, 64, 64),
                          (64, 64, 64, 64)),
        encoder_paddings=((1, ), (1, 1, 1), (1, 1, 1, 1),
                          ((0, 1, 1), 1, 1, 1))),
    # RPNV2: layer_nums [5, 5], strides [1, 2], filters [64, 128],
    # upsample strides [1, 2] to [128, 128]
    backbone=dict(
        in_channels=128, layer_nums=[5, 5], layer_strides=[1, 2],
        out_channels=[64, 128]),
    neck=dict(
        in_channels=[64, 128], upsample_strides=[1, 2],
        out_channels=[128, 128]),
    bbox_head=dict(
        type='VitisAnchor3DHead',
        num_classes=2,
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='Anchor3DRangeGenerator',  # endpoints included
            # SECOND (w, l, h), centre z -> mmdet3d (l, w, h), bottom z
            ranges=[[-49.6, 0, -0.939 - 1.56 / 2, 49.6, 49.6,
                     -0.939 - 1.56 / 2],
                    [-49.6, 0, -0.739 - 1.73 / 2, 49.6, 49.6,
                     -0.739 - 1.73 / 2]],
            sizes=[[3.9, 1.6, 1.56], [0.8, 0.6, 1.73]],
            rotations=[0, 1.57],
            reshape_out=False)),
    train_cfg=dict(
        _delete_=True,
        assigner=[
            dict(  # car
                type='Max3DIoUAssigner',
                iou_calculator=dict(type='BboxOverlapsNearest3D'),
                pos_iou_thr=0.6, neg_iou_thr=0.45, min_pos_iou=0.45,
                ignore_iof_thr=-1),
            dict(  # pedestrian
                type='Max3DIoUAssigner',
                iou_calculator=dict(type='BboxOverlapsNearest3D'),
                pos_iou_thr=0.35, neg_iou_thr=0.2, min_pos_iou=0.2,
                ignore_iof_thr=-1),
        ],
        allowed_border=0, pos_weight=-1, debug=False),
    # one class-agnostic rotated NMS, score 0.3, IoU 0.1, pre 1000, post 100
    test_cfg=dict(
        use_rotate_nms=True, nms_across_levels=False, nms_thr=0.1,
        score_thr=0.3, min_bbox_size=0, nms_pre=1000, max_num=100,
        class_agnostic_nms=True,
        zero_velocity=True))  # 7-dim boxes; NuScenesMetric reads velocity

load_points = dict(
    type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=4)
train_pipeline = [
    load_points,
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    painting,  # before any augmentation: it projects into the cameras
    dict(type='GlobalRotScaleTrans', rot_range=[-0.3925, 0.3925],
         scale_ratio_range=[0.95, 1.05], translation_std=[0, 0, 0]),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs',
         keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])
]
test_pipeline = [
    load_points,
    painting,
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points'])
]
# no velocity: 7-dim ground truth, as the reference trains
dataset = dict(
    data_root=data_root, metainfo=metainfo, modality=input_modality,
    data_prefix=data_prefix, with_velocity=False)
train_dataloader = dict(
    batch_size=2, num_workers=2,
    dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1,
    dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator
