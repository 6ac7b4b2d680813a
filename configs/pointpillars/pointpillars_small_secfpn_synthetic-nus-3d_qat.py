# Quantization-aware training (QAT) of the small PointPillars for the DPU:
# the float config, started from its trained checkpoint (load_from), with
# the DPUQATHook turning the DPU subgraphs into their int8 fake-quant form
# (same partition and DPU arithmetic as tools/quant.py) before the first
# iteration. Validation reports the int8 metrics. Then
#   python tools/test.py THIS_CONFIG work_dirs/.../epoch_N.pth
#   python tools/quant.py THIS_CONFIG work_dirs/.../epoch_N.pth \
#       --quant_mode test --dump_xmodel
# evaluate / export the QAT model without recalibration.
_base_ = ['./pointpillars_small_secfpn_synthetic-nus-3d.py']

load_from = 'work_dirs/demo/float/epoch_10.pth'

qat_epochs = 3
qat_lr = 2e-4
calib_len = 100

custom_hooks = [
    dict(type='DPUQATHook', backend='auto', calib_len=calib_len,
         freeze_bn_after=0,
         # activation / weight fix positions follow the data and weights
         # for the first ~half epoch, then are frozen (DPU shift limits)
         freeze_observers_after=50)
]

optim_wrapper = dict(optimizer=dict(lr=qat_lr))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=qat_epochs,
         T_max=qat_epochs, eta_min=qat_lr * 0.01)
]
train_cfg = dict(max_epochs=qat_epochs, val_interval=qat_epochs)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
