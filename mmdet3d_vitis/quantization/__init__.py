"""Quantization support: the DPU partition of mmdet3d voxel detectors.

* :mod:`.partition` -- :func:`partition_detector` splits a built detector into
  tensor-only DPU subgraphs and CPU glue.
* :mod:`.partitioned_detector` -- :class:`VitisPartitionedDetector`, an mmdet3d
  detector (registered in ``MODELS``) that runs a partition and lets a
  backend swap the subgraphs.
* :mod:`.inspector` -- per-layer DPU/CPU placement, shapes and MACs.
* :mod:`.backends` -- quantization backends (builtin brevitas, nndct).
* :mod:`.quant_runner` -- the calib / test / inspect flow of
  ``tools/quant.py`` (:class:`QuantOptions`, :func:`run_quant`).
"""
from .inspector import (InspectionReport, LayerRecord, format_table,
                        inspect_detector)
from .partition import (BEV, PILLAR_ENCODER, BEVSubgraph, DetectorPartition,
                        PillarEncoderSubgraph, PointDecoration, PointLayer,
                        UnsupportedModelError, partition_detector)
from .partitioned_detector import VitisPartitionedDetector
from .quant_runner import QuantizedModel, QuantOptions, run_quant

__all__ = [
    'BEV', 'PILLAR_ENCODER', 'BEVSubgraph', 'DetectorPartition',
    'InspectionReport', 'LayerRecord', 'PillarEncoderSubgraph',
    'PointDecoration', 'PointLayer', 'QuantOptions', 'QuantizedModel',
    'UnsupportedModelError',
    'VitisPartitionedDetector', 'format_table', 'inspect_detector',
    'partition_detector', 'run_quant'
]
