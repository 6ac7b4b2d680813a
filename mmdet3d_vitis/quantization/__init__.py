"""Quantization support: the DPU partition of mmdet3d voxel detectors.

* :mod:`.partition` -- :func:`partition_detector` splits a built detector into
  tensor-only DPU subgraphs and CPU glue.
* :mod:`.partitioned_detector` -- :class:`VitisPartitionedDetector`, an mmdet3d
  detector (registered in ``MODELS``) that runs a partition and lets a
  backend swap the subgraphs.
* :mod:`.inspector` -- per-layer DPU/CPU placement, shapes and MACs.
"""
from .inspector import (InspectionReport, LayerRecord, format_table,
                        inspect_detector)
from .partition import (BEV, PILLAR_ENCODER, BEVSubgraph, DetectorPartition,
                        PillarEncoderSubgraph, PointDecoration, PointLayer,
                        UnsupportedModelError, partition_detector)
from .partitioned_detector import VitisPartitionedDetector

__all__ = [
    'BEV', 'PILLAR_ENCODER', 'BEVSubgraph', 'DetectorPartition',
    'InspectionReport', 'LayerRecord', 'PillarEncoderSubgraph',
    'PointDecoration', 'PointLayer', 'UnsupportedModelError',
    'VitisPartitionedDetector', 'format_table', 'inspect_detector',
    'partition_detector'
]
