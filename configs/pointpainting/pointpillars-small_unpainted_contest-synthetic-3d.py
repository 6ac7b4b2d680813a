# The unpainted baseline of
# pointpainting_pointpillars-small_contest-synthetic-3d.py: the same task,
# range, model and schedule on the same points (those the front camera
# sees), as x, y, z, intensity without the painted scores.
_base_ = ['./pointpainting_pointpillars-small_contest-synthetic-3d.py']

num_point_features = 4
model = dict(pts_voxel_encoder=dict(in_channels=num_point_features))
train_pipeline = _base_.train_pipeline
train_pipeline[2].append_scores = False
test_pipeline = _base_.test_pipeline
test_pipeline[1].append_scores = False
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
