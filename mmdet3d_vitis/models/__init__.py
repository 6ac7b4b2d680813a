"""Model components registered in ``mmdet3d.registry.MODELS``."""
