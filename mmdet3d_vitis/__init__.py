"""mmdet3d-vitis: mmdetection3d detectors onto Xilinx/AMD DPUs as int8.

Importing the package registers every component in ``mmdet3d.registry``
(configs do it with ``custom_imports = dict(imports=['mmdet3d_vitis'])``) and
lets mmengine checkpoints load under ``torch.load(weights_only=True)``.
"""
from .checkpoint import register_checkpoint_safe_globals
from .version import __version__
from . import datasets  # noqa: F401,E402  (registers components)
from . import models  # noqa: F401,E402
from . import quantization  # noqa: F401,E402
from . import painting  # noqa: F401,E402
from . import hooks  # noqa: F401,E402

register_checkpoint_safe_globals()

__all__ = ['__version__']
