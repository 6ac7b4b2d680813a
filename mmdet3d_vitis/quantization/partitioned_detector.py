"""A detector that runs a :class:`DetectorPartition`: CPU glue + DPU subgraphs.

:class:`VitisPartitionedDetector` is an mmdet3d detector (registered in
``mmdet3d.registry.MODELS``) whose ``predict`` returns the same
``Det3DDataSample`` results as the detector it wraps, but computes them the
way the DPU deployment will: per sample (the DPU and ``pytorch_nndct`` run
batch size 1), through the tensor-only DPU subgraphs, with voxelization,
decoration, scatter / sparse convolution and decode + NMS on the CPU.
mmdet3d's metrics and mmengine's test loop work unchanged.

A quantization backend swaps each DPU subgraph for a fake-quant (or
deployed) module with the same signature via :meth:`set_subgraph`.
``loss`` trains through the subgraphs: quantization-aware training
(:class:`mmdet3d_vitis.hooks.DPUQATHook`) makes this the runner's model.

Config use::

    model = dict(type='VitisPartitionedDetector',
                 detector=<the float detector's model dict>,
                 checkpoint='float.pth')

The checkpoint goes in ``checkpoint``, not in the runner's ``load_from``:
the pillar encoder holds converted copies of the voxel encoder weights, so
weights must be loaded before the partition is made.
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample
from mmengine.runner import load_checkpoint
from torch import Tensor, nn

from ..checkpoint import check_checkpoint_matches
from .partition import BEV, partition_detector


@MODELS.register_module()
class VitisPartitionedDetector(Base3DDetector):
    """Runs a detector as CPU glue + DPU subgraphs, one sample at a time.

    Args:
        detector: the float detector, built or as a config dict.
        checkpoint: weights loaded into the detector before partitioning.
        voxel_padding: pad the pillar encoder input to this many voxels, as
            a DPU with a fixed input shape needs (see
            :class:`DetectorPartition`).
        init_cfg: unused by the partition (weights come from ``detector``);
            accepted for mmengine's BaseModule.
    """

    def __init__(self,
                 detector: Union[nn.Module, dict],
                 checkpoint: Optional[str] = None,
                 voxel_padding: Optional[int] = None,
                 init_cfg: Optional[dict] = None):
        if isinstance(detector, dict):
            detector = MODELS.build(detector)
        if checkpoint is not None:
            # mmengine only warns about missing keys: refuse another model's.
            check_checkpoint_matches(detector, checkpoint)
            load_checkpoint(detector, checkpoint, map_location='cpu')
        partition = partition_detector(detector, voxel_padding)
        super().__init__(
            data_preprocessor=partition.data_preprocessor, init_cfg=init_cfg)
        self.partition = partition

    def init_weights(self) -> None:
        """Keep the detector's weights: a runner must not re-initialise."""

    @property
    def subgraph_names(self) -> List[str]:
        """DPU subgraph names in execution order."""
        return self.partition.subgraph_names

    def get_subgraph(self, name: str) -> nn.Module:
        return self.partition.subgraphs[name]

    def set_subgraph(self, name: str, module: nn.Module) -> None:
        """Replace DPU subgraph ``name`` by a module of the same signature.

        ``module(*example_inputs(name))`` must return what the original
        returns: ``(1, C, N, 1)`` for ``'pillar_encoder'``, the flat head
        tuple for ``'bev'``.
        """
        if name not in self.partition.subgraphs:
            raise KeyError(f'no DPU subgraph {name!r}; subgraphs: '
                           f'{self.subgraph_names}')
        self.partition.subgraphs[name] = module

    def example_inputs(self, name: str,
                       num_voxels: Optional[int] = None) -> Tuple[Tensor]:
        """Input tuple for tracing subgraph ``name``; see
        :meth:`DetectorPartition.example_inputs`."""
        return self.partition.example_inputs(name, num_voxels)

    def _sample_voxels(self, batch_inputs_dict: dict,
                       batch_data_samples: Optional[List[Det3DDataSample]]
                       ) -> List[Tuple[Tensor, Tensor, Tensor]]:
        """``(voxels, num_points, coors)`` of each sample of the batch."""
        voxel_dict = batch_inputs_dict.get('voxels')
        if voxel_dict is None:
            voxel_dict = self.data_preprocessor.voxelize(
                batch_inputs_dict['points'], batch_data_samples)
        coors = voxel_dict['coors']
        num_samples = len(batch_inputs_dict['points'])
        samples = []
        for i in range(num_samples):
            mask = coors[:, 0] == i
            samples.append((voxel_dict['voxels'][mask],
                            voxel_dict['num_points'][mask], coors[mask]))
        return samples

    def _head_outputs(self, batch_inputs_dict: dict,
                      batch_data_samples: Optional[List[Det3DDataSample]]
                      ) -> List[Tuple[Tensor, ...]]:
        return [
            self.partition(*sample) for sample in self._sample_voxels(
                batch_inputs_dict, batch_data_samples)
        ]

    def predict(self, batch_inputs_dict: dict,
                batch_data_samples: List[Det3DDataSample],
                **kwargs) -> List[Det3DDataSample]:
        """Detections per sample, as the wrapped detector's ``predict``.

        ``kwargs`` go to the head's ``predict_by_feat`` (e.g. ``rescale``).
        """
        results = []
        outs = self._head_outputs(batch_inputs_dict, batch_data_samples)
        for sample_outs, sample in zip(outs, batch_data_samples):
            results += self.partition.bbox_head.predict_by_feat(
                *self.partition.split_head_outputs(sample_outs),
                batch_input_metas=[sample.metainfo],
                **kwargs)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self,
                 batch_inputs_dict: dict,
                 data_samples: Optional[List[Det3DDataSample]] = None,
                 **kwargs) -> Tuple[List[Tensor], ...]:
        """Head maps as ``Anchor3DHead.forward`` returns them.

        ``(cls_scores, bbox_preds, dir_cls_preds)``, each a per-level list
        of ``(B, ...)`` maps (the per-sample subgraph outputs concatenated).
        """
        per_sample = [
            self.partition.split_head_outputs(outs)
            for outs in self._head_outputs(batch_inputs_dict, data_samples)
        ]
        return tuple([
            None if maps[0] is None else torch.cat(maps) for maps in zip(
                *[sample[kind] for sample in per_sample])
        ] for kind in range(3))

    def extract_feat(self, batch_inputs_dict: dict) -> Tensor:
        """The ``bev`` subgraph inputs: ``(B, C, H, W)`` pseudo-images."""
        return torch.cat([
            self.partition.bev_input(*sample)
            for sample in self._sample_voxels(batch_inputs_dict, None)
        ])

    def loss(self, batch_inputs_dict: dict,
             batch_data_samples: List[Det3DDataSample],
             **kwargs) -> Dict[str, Tensor]:
        """The wrapped head's losses on the head maps of the DPU subgraphs.

        What quantization-aware training (:class:`~mmdet3d_vitis.hooks.
        DPUQATHook`) trains: voxelization, decoration and the pillar encoder
        run per sample (as deployed), the per-sample BEV pseudo-images are
        stacked and the ``bev`` subgraph runs once on the batch (its
        per-tensor quantizers are element-wise, so with fixed fix positions
        that equals running it per sample), then the detector's own
        ``loss_by_feat`` computes the losses, as ``Base3DDenseHead.loss``
        does.
        """
        samples = self._sample_voxels(batch_inputs_dict, batch_data_samples)
        bev = torch.cat([self.partition.bev_input(*s) for s in samples])
        outs = self.partition.subgraphs[BEV](bev)
        cls_scores, bbox_preds, dir_cls_preds = \
            self.partition.split_head_outputs(outs)
        gts, metas, ignores = [], [], []
        for sample in batch_data_samples:
            metas.append(sample.metainfo)
            gts.append(sample.gt_instances_3d)
            ignores.append(sample.get('ignored_instances', None))
        return self.partition.bbox_head.loss_by_feat(
            cls_scores, bbox_preds, dir_cls_preds, gts, metas, ignores)
