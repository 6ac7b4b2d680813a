"""mmengine hooks of the plugin (registered in ``mmdet3d.registry.HOOKS``).

* :class:`DPUQATHook` -- quantization-aware training of the DPU subgraphs
  (see :mod:`.qat`).
"""
from .qat import (QAT_KEY, DPUQATHook, build_qat_model, ensure_qat_hook,
                  load_qat_checkpoint, qat_state_of, run_qat)

__all__ = [
    'QAT_KEY', 'DPUQATHook', 'build_qat_model', 'ensure_qat_hook',
    'load_qat_checkpoint', 'qat_state_of', 'run_qat'
]
