"""Per-class IoU and mIoU of semantic masks (``mmdet3d.registry.METRICS``).

IoU of class ``c`` = ``sum |pred=c and gt=c| / sum |pred=c or gt=c|`` over
all pixels of the split (areas summed over images first, as mmseg's
``IoUMetric`` does); mIoU is the mean over the classes present in the
ground truth of the split. Pixels with ``ignore_index`` in the ground truth
count nowhere.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmdet3d.registry import METRICS


def area_counts(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                ignore_index: int = 255) -> np.ndarray:
    """``(3, num_classes)`` int64: intersection, prediction area and
    ground-truth area per class, for one pair of label maps."""
    pred = torch.as_tensor(pred).reshape(-1).long()
    gt = torch.as_tensor(gt).reshape(-1).long()
    if pred.numel() != gt.numel():
        raise ValueError(f'prediction has {pred.numel()} pixels, ground '
                         f'truth {gt.numel()}')
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    inter = torch.bincount(gt[pred == gt], minlength=num_classes)
    area_pred = torch.bincount(pred.clamp(0, num_classes - 1),
                               minlength=num_classes)
    area_gt = torch.bincount(gt, minlength=num_classes)
    return torch.stack([inter[:num_classes], area_pred[:num_classes],
                        area_gt[:num_classes]]).numpy().astype(np.int64)


def iou_from_counts(counts: np.ndarray,
                    class_names: Sequence[str]) -> Dict[str, float]:
    """Metrics dict from summed :func:`area_counts`: ``mIoU``, ``aAcc``
    and ``IoU/<class>`` for the classes present in the ground truth."""
    inter, area_pred, area_gt = counts
    union = area_pred + area_gt - inter
    present = area_gt > 0
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    metrics = {
        'mIoU': float(np.mean(iou[present])) if present.any() else
        float('nan'),
        'aAcc': float(inter.sum() / max(area_gt.sum(), 1)),
    }
    for c, name in enumerate(class_names):
        if present[c]:
            metrics[f'IoU/{name}'] = float(iou[c])
    return metrics


@METRICS.register_module()
class VitisSegIoUMetric(BaseMetric):
    """mIoU over ``pred_sem_seg`` vs ``gt_sem_seg`` of the data samples.

    Args:
        num_classes: label count (default: the dataset's ``classes``).
        class_names: names for the per-class keys (default: the dataset's
            ``classes`` metainfo).
        ignore_index: ground-truth label that is not evaluated.
    """

    default_prefix: Optional[str] = None

    def __init__(self, num_classes: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None,
                 ignore_index: int = 255,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.class_names = tuple(class_names) if class_names else None
        self._num_classes = num_classes
        self.ignore_index = ignore_index

    @property
    def num_classes(self) -> int:
        if self._num_classes is not None:
            return self._num_classes
        return len(self._names())

    def _names(self) -> Sequence[str]:
        if self.class_names:
            return self.class_names
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError('VitisSegIoUMetric needs num_classes or '
                             'class_names, or a dataset with classes')
        return tuple(classes)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data']
            gt = sample['gt_sem_seg']['data'].to(pred.device)
            self.results.append(area_counts(pred, gt, self.num_classes,
                                            self.ignore_index))

    def compute_metrics(self, results: List[np.ndarray]) -> Dict[str, float]:
        counts = np.sum(results, axis=0)
        names = list(self._names()) if (
            self.class_names or self.dataset_meta) else [
                str(i) for i in range(self.num_classes)]
        names += [str(i) for i in range(len(names), self.num_classes)]
        metrics = iou_from_counts(counts, names)
        logger = MMLogger.get_current_instance()
        lines = [f'{k:<28s} {v:.4f}' for k, v in metrics.items()]
        logger.info('segmentation IoU:\n' + '\n'.join(lines))
        return metrics
