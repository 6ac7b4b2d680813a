# Mirror of the Vitis AI model zoo's pt_pointpainting_nuscenes detector:
# the zoo PointPillars (configs/pointpillars/...zoo-40000x64...) on 16-dim
# painted points, 5 raw (x, y, z, intensity, dt) + 11 one-hot classes
# (background + the 10 nuScenes classes) from all six cameras.  The zoo
# paints with its semantic segmenter; here the painting source is the
# synthetic set's camera masks (swap in a segmenter's for real data).
# Sweep points are painted through the key frame's cameras.
_base_ = ['../pointpillars/pointpillars_zoo-40000x64_secfpn_nus-3d.py']

data_root = 'data/synthetic/'
cams = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
        'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
painting = dict(
    type='VitisPointPainting', source='masks', cameras=cams,
    num_classes=11, mode='onehot', keep_outside=True,
    mask_root=data_root + 'seg_masks', min_depth=1.0)
num_point_features = 5 + 11
input_modality = dict(use_lidar=True, use_camera=True)
data_prefix = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                   **{cam: f'samples/{cam}' for cam in cams})

model = dict(pts_voxel_encoder=dict(in_channels=num_point_features))

train_pipeline = _base_.train_pipeline
train_pipeline.insert(3, painting)  # after the annotations, before augment
test_pipeline = _base_.test_pipeline
test_pipeline.insert(2, painting)
dataset = dict(data_root=data_root, modality=input_modality,
               data_prefix=data_prefix)
train_dataloader = dict(dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
