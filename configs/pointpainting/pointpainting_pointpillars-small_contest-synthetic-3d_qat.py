# Quantization-aware training of the painted small PointPillars (the contest
# task on a DPU-deployable pillar model), from its float checkpoint, with
# the same hook settings as the unpainted QAT config.
_base_ = ['./pointpainting_pointpillars-small_contest-synthetic-3d.py']

# the float run of the 0.8 m head / per-class assigner version of the base
# (the earlier work_dirs/pointpainting_pointpillars-small_contest-synthetic-
# 3d checkpoint has the 1.6 m head: its neck and head do not load)
load_from = ('work_dirs/pointpainting_pointpillars-small_contest-synthetic-'
             '3d_camview/epoch_10.pth')
qat_epochs = 3
qat_lr = 2e-4

custom_hooks = [
    dict(type='DPUQATHook', backend='builtin', calib_len=100,
         freeze_bn_after=0, freeze_observers_after=0)
]
optim_wrapper = dict(optimizer=dict(lr=qat_lr))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=qat_epochs,
         T_max=qat_epochs, eta_min=qat_lr * 0.01)
]
train_cfg = dict(max_epochs=qat_epochs, val_interval=qat_epochs)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
