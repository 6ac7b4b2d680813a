# The reference port on a CPU budget: 4 epochs with one cosine cycle
# instead of the cyclic 40-epoch schedule (about 25 minutes on 2 cores on
# the synthetic set).
_base_ = ['./pointpainting_second-fhd_rpnv2_contest-synthetic-3d.py']

max_epochs = 4
lr = 0.0018
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         T_max=max_epochs, eta_min=lr * 0.01)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs,
                 val_interval=max_epochs)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=max_epochs,
                    max_keep_ckpts=1))
