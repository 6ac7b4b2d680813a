# The contest task (front camera, car and pedestrian, 7-dim painted points)
# on a DPU-deployable pillar model: painted points -> pillars -> SECOND ->
# SECONDFPN -> Anchor3DHead, the small PointPillars of
# configs/pointpillars/ with the painting transform in front. Unlike the
# reference's spconv middle, every learned layer runs on the DPU.
_base_ = ['../pointpillars/pointpillars_small_secfpn_synthetic-nus-3d.py']

data_root = 'data/synthetic/'
class_names = ['car', 'pedestrian']
metainfo = dict(classes=class_names, version='v1.0-mini')
# the front camera looks along +y of nuScenes' LIDAR_TOP frame: a
# 102.4 x 51.2 m half-space in front, 0.4 m pillars
point_cloud_range = [-51.2, 0, -5, 51.2, 51.2, 3]
voxel_size = [0.4, 0.4, 8]
grid_hw = [128, 256]
painting = dict(
    type='VitisPointPainting', source='masks', cameras=['CAM_FRONT'],
    num_classes=3, class_map={0: 1, 7: 2},  # mask labels: nuScenes order
    mask_root=data_root + 'seg_masks', min_depth=1.0)
num_point_features = 4 + 3
input_modality = dict(use_lidar=True, use_camera=True)
cams = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
        'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
data_prefix = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                   **{cam: f'samples/{cam}' for cam in cams})
# nuScenes anchor sizes and bottom z of car and pedestrian
car_z, ped_z = -1.80032795, -1.61785072

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(point_cloud_range=point_cloud_range,
                         voxel_size=voxel_size)),
    pts_voxel_encoder=dict(
        in_channels=num_point_features, voxel_size=voxel_size,
        point_cloud_range=point_cloud_range),
    pts_middle_encoder=dict(output_shape=grid_hw),
    # Head on a 64 x 128 map (0.8 m cells, the zoo's upsample strides): on
    # the small config's 1.6 m cells only 14 % of the synthetic pedestrians
    # (0.7 m) have an anchor with BEV IoU >= 0.3 (27 % >= 0.2), so hardly
    # any pedestrian anchor was ever positive and pedestrian AP stayed 0;
    # at 0.8 m 83 % reach 0.2. 32768 anchors, about the small config's.
    # It takes this and the per-class assigners below (README: each alone
    # left pedestrian AP <= 0.15, both 0.67).
    pts_neck=dict(upsample_strides=[1, 2, 4]),
    pts_bbox_head=dict(
        num_classes=2,
        # one assigner per class (below) needs the anchors per size
        assign_per_class=True,
        anchor_generator=dict(
            ranges=[[-51.2, 0, car_z, 51.2, 51.2, car_z],
                    [-51.2, 0, ped_z, 51.2, 51.2, ped_z]],
            sizes=[[4.60718145, 1.95017717, 1.72270761],
                   [0.7256437, 0.66344886, 1.75748069]],
            reshape_out=False)),
    # the reference's matched / unmatched IoU per class (car 0.6 / 0.45,
    # pedestrian 0.35 / 0.2) instead of one 0.6 / 0.3 for both: a 0.7 m
    # pedestrian rarely overlaps an anchor by 0.3
    train_cfg=dict(pts=dict(assigner=[
        dict(type='Max3DIoUAssigner',
             iou_calculator=dict(type='BboxOverlapsNearest3D'),
             pos_iou_thr=0.6, neg_iou_thr=0.45, min_pos_iou=0.45,
             ignore_iof_thr=-1),
        dict(type='Max3DIoUAssigner',
             iou_calculator=dict(type='BboxOverlapsNearest3D'),
             pos_iou_thr=0.35, neg_iou_thr=0.2, min_pos_iou=0.2,
             ignore_iof_thr=-1),
    ])))

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
dataset = dict(data_root=data_root, metainfo=metainfo,
               modality=input_modality, data_prefix=data_prefix)
train_dataloader = dict(dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
# The models see the points in CAM_FRONT's image only: evaluate the ground
# truth and predictions whose centre it sees (depth > 1 m, as painted
# points); NuScenesMetric's all-around ground truth caps recall.
val_evaluator = dict(
    _delete_=True, type='VitisCameraViewNuScenesMetric',
    cameras=['CAM_FRONT'], min_depth=1.0, data_root=data_root,
    ann_file=data_root + 'nuscenes_infos_val.pkl', metric='bbox')
test_evaluator = val_evaluator
