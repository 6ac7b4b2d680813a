"""mmdet3d-vitis: mmdetection3d LiDAR / PointPainting detectors onto Xilinx DPUs.

torch and mmcv are installed by ``tools/setup_env.sh`` before this package:
torch from the local CPU wheel, mmcv 2.1.0 compiled with ops (no PyPI wheel
exists for torch 2.13). Everything else is pinned here to the versions this
project was verified with.
"""
from setuptools import find_packages, setup

version = {}
with open('mmdet3d_vitis/version.py') as f:
    exec(f.read(), version)

setup(
    name='mmdet3d_vitis',
    version=version['__version__'],
    description='Quantize and deploy mmdetection3d detectors to Vitis AI DPUs',
    packages=find_packages(include=['mmdet3d_vitis', 'mmdet3d_vitis.*']),
    python_requires='>=3.10',
    install_requires=[
        'torch==2.13.0',
        'mmengine==0.10.7',
        'mmdet==3.2.0',
        'mmdet3d==1.4.0',
        'spconv==2.3.8',
        'numpy<2',
        'nuscenes-devkit==1.2.0',
        'brevitas==0.13.4',
        'onnx==1.23.2',
        'onnxruntime==1.32.0',
        # compiled deploy glue (numba is also mmdet3d's); k-d tree of the
        # reference NMS; BEV / benchmark pictures
        'numba==0.68.1',
        'scipy==1.17.1',
        'matplotlib==3.11.2',
    ],
    extras_require={
        'tests': ['pytest==9.2.0', 'hypothesis==6.170.17'],
    },
    zip_safe=False,
)
