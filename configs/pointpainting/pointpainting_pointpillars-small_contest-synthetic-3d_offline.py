# The painted contest pillar model on points painted offline by
# tools/paint.py (e.g. by the trained camera segmenter):
#   python tools/paint.py configs/pointpainting/pointpainting_pointpillars-small_contest-synthetic-3d.py \
#       --seg-checkpoint work_dirs/segmenter/iter_1000.pth --out-dir data/synthetic_painted
# loads OUT's 7-dim points (x, y, z, intensity, 3 painted scores) and the
# info pkls paint.py wrote; no painting transform.  Ground truth and
# cameras come from the same infos.  Another OUT:
#   --cfg-options test_dataloader.dataset.ann_file=OUT/nuscenes_infos_val.pkl
#                 test_dataloader.dataset.data_prefix.pts=OUT/samples/LIDAR_TOP
_base_ = ['./pointpainting_pointpillars-small_contest-synthetic-3d.py']

# relative to data_root (data/synthetic/), or absolute
painted_root = '../synthetic_painted/'
load_points = dict(type='LoadPointsFromFile', coord_type='LIDAR',
                   load_dim=7, use_dim=7)
test_pipeline = [
    load_points,
    dict(type='PointsRangeFilter',
         point_cloud_range=_base_.point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points'])
]
val_dataloader = dict(dataset=dict(
    ann_file=painted_root + 'nuscenes_infos_val.pkl',
    data_prefix=dict(pts=painted_root + 'samples/LIDAR_TOP'),
    pipeline=test_pipeline))
test_dataloader = val_dataloader
