"""spconv 2.3.8 (CPU wheel): let sparse convolutions train without CUDA.

spconv's ``indice_conv_backward`` asks ``torch.cuda.current_stream()`` for a
stream before it knows whether the tensors are on the GPU, so a backward
pass on a CPU-only torch fails with "Torch not compiled with CUDA enabled"
(the forward guards it).  The CPU path never uses that stream; where CUDA
is unavailable, ``spconv.pytorch.ops.get_current_stream`` is replaced by
one returning 0 (what spconv's own CPU branches pass).  Nothing changes
where CUDA is available.
"""
import torch

__all__ = ['patch_spconv_cpu_backward']


def patch_spconv_cpu_backward() -> bool:
    """Apply the fix if needed; returns whether it was applied."""
    if torch.cuda.is_available():
        return False
    try:
        from spconv.pytorch import ops
    except Exception:  # spconv absent: nothing to patch
        return False
    if getattr(ops.get_current_stream, '_mmdet3d_vitis_cpu', False):
        return True

    def get_current_stream():
        return 0

    get_current_stream._mmdet3d_vitis_cpu = True
    ops.get_current_stream = get_current_stream
    return True
