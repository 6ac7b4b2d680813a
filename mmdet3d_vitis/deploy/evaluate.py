"""Evaluate a deployed :class:`~mmdet3d_vitis.deploy.Pipeline` on a config's
test split with the config's ``test_evaluator`` (no mmdet3d model is built).

    from mmdet3d_vitis.deploy import Pipeline, evaluate_pipeline
    result = evaluate_pipeline(Pipeline('quantize_result/deploy'), cfg)
    result['metrics'], result['num_frames'], result['seconds_per_frame']

Each frame is what the config's test pipeline hands the detector (the
dataset of :func:`~mmdet3d_vitis.quantization.quant_runner.eval_dataset_cfg`,
sweeps merged); its ``points`` go through the Pipeline and its detections,
as ``LiDARInstance3DBoxes``, to the evaluator with the frame's metainfo
(``sample_idx``, ``lidar_path``, ... as ``NuScenesMetric`` reads them).
"""
import copy
import os
import os.path as osp
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np

from ..errors import UserInputError

__all__ = ['ConfigMismatchError', 'NoDetectionsError', 'check_pipeline_config',
           'config_class_names', 'evaluate_pipeline']


class ConfigMismatchError(UserInputError):
    """The config's classes / point width differ from the deploy folder's."""


class NoDetectionsError(UserInputError):
    """The Pipeline detected nothing on any evaluated frame (the nuScenes
    devkit cannot evaluate an empty submission)."""


def config_class_names(cfg) -> Optional[List[str]]:
    """The class names of the config's test split (``metainfo.classes`` of
    the test dataset, else ``class_names``), or None."""
    loader = cfg.get('test_dataloader') or {}
    dataset = loader.get('dataset') or {}
    while isinstance(dataset, dict) and 'dataset' in dataset:
        dataset = dataset['dataset']
    classes = None
    if isinstance(dataset, dict):
        classes = (dataset.get('metainfo') or {}).get('classes')
    classes = classes or cfg.get('class_names')
    return None if classes is None else [str(c) for c in classes]


def check_pipeline_config(pipeline, cfg=None, class_names=None,
                          num_features: Optional[int] = None) -> None:
    """Raise :class:`ConfigMismatchError` when the config (or the given
    class names / point width) disagrees with the deploy folder."""
    if class_names is None and cfg is not None:
        class_names = config_class_names(cfg)
    if class_names is not None and list(class_names) != list(
            pipeline.class_names):
        raise ConfigMismatchError(
            f'the config\'s classes {list(class_names)} differ from the '
            f'deploy folder\'s {list(pipeline.class_names)} (pipeline.json '
            f'model.class_names); evaluate with the config the detector was '
            f'quantized with')
    if num_features is not None and int(num_features) != int(
            pipeline.num_features):
        raise ConfigMismatchError(
            f'the config\'s test pipeline gives points with {num_features} '
            f'features, the deploy folder expects {pipeline.num_features} '
            f'(pipeline.json points.num_features); check load_dim / use_dim '
            f'of LoadPointsFromFile and LoadPointsFromMultiSweeps')


def _build_evaluator(cfg, dataset, work_dir: str):
    from mmengine.evaluator import Evaluator
    evaluator_cfg = copy.deepcopy(cfg.get('test_evaluator'))
    if not evaluator_cfg:
        raise UserInputError('the config has no test_evaluator')
    cfgs = evaluator_cfg if isinstance(evaluator_cfg,
                                       (list, tuple)) else [evaluator_cfg]
    cfgs = [copy.deepcopy(c) for c in cfgs]
    for c in cfgs:
        # NuScenesMetric-like metrics: result json / devkit output under
        # work_dir instead of a temporary directory that vanishes.
        if isinstance(c, dict) and 'NuScenes' in str(c.get('type', '')) \
                and not c.get('jsonfile_prefix'):
            c['jsonfile_prefix'] = osp.join(work_dir, 'results')
    evaluator = Evaluator(cfgs)
    evaluator.dataset_meta = dataset.metainfo
    return evaluator


def _data_sample(meta: dict, result: dict) -> dict:
    """What ``Det3DDataSample.to_dict()`` gives the metric (mmengine's
    Evaluator turns data samples into dicts the same way): the frame's
    metainfo with ``pred_instances_3d`` (``bboxes_3d`` as
    ``LiDARInstance3DBoxes``, ``scores_3d``, ``labels_3d``) and an empty
    ``pred_instances`` (no 2D predictions)."""
    import torch
    from mmdet3d.structures import LiDARInstance3DBoxes
    bboxes = torch.from_numpy(
        np.ascontiguousarray(result['bboxes'], dtype=np.float32))
    pred = dict(
        bboxes_3d=LiDARInstance3DBoxes(bboxes, box_dim=bboxes.shape[1]),
        scores_3d=torch.from_numpy(
            np.ascontiguousarray(result['scores'], dtype=np.float32)),
        labels_3d=torch.from_numpy(
            np.ascontiguousarray(result['labels'], dtype=np.int64)))
    return dict(meta, pred_instances_3d=pred, pred_instances={})


def evaluate_pipeline(pipeline, cfg, work_dir: Optional[str] = None,
                      max_frames: Optional[int] = None,
                      progress: bool = True, dataset=None) -> dict:
    """Run ``pipeline`` on the config's test split and evaluate it.

    Args:
        pipeline: a :class:`~mmdet3d_vitis.deploy.Pipeline`.
        cfg: the (loaded) mmengine config; its ``test_dataloader.dataset``
            and ``test_evaluator`` are used.
        work_dir: where the metric writes its files (result json, devkit
            output); a temporary directory (removed afterwards) if None.
        max_frames: run only the first ``max_frames`` frames.  The other
            frames are submitted with no detections (the nuScenes devkit
            wants every frame of the split), so the metrics of a partial
            run are a lower bound: use it for smoke tests.
        progress: show mmengine's ProgressBar.
        dataset: an already built test dataset (default: built from cfg).

    Returns:
        ``dict(metrics=<the evaluator's flat dict>, num_frames=<frames run
        through the pipeline>, total_frames=<frames in the split>,
        seconds_per_frame=<mean Pipeline time per run frame>,
        num_detections=<total>, stage_seconds=<mean seconds per stage>)``.

    Raises:
        ConfigMismatchError: class names / point width differ from the
            deploy folder's.
        NoDetectionsError: no detection on any frame.
        UserInputError: bad config (no test split / evaluator), bad
            ``max_frames``, or a frame the Pipeline refuses.
    """
    if max_frames is not None and (isinstance(max_frames, bool) or
                                   int(max_frames) < 1):
        raise UserInputError(f'max_frames must be >= 1, got {max_frames!r}')
    from mmengine.registry import DefaultScope
    scope = cfg.get('default_scope', 'mmdet3d')
    with DefaultScope.overwrite_default_scope(scope):
        return _evaluate(pipeline, cfg, work_dir, max_frames, progress,
                         dataset)


def _evaluate(pipeline, cfg, work_dir, max_frames, progress, dataset):
    from mmengine.utils import ProgressBar

    from ..quantization.quant_runner import build_dataset, eval_dataset_cfg
    if dataset is None:
        dataset = build_dataset(eval_dataset_cfg(cfg))
    classes = dataset.metainfo.get('classes')
    check_pipeline_config(
        pipeline, class_names=None if classes is None else list(classes))
    total = len(dataset)
    if total < 1:
        raise UserInputError('the config\'s test split has no frames')
    count = total if max_frames is None else min(int(max_frames), total)

    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix='deploy_eval_')
        work_dir = tmp.name
    try:
        os.makedirs(work_dir, exist_ok=True)
        evaluator = _build_evaluator(cfg, dataset, work_dir)
        bar = ProgressBar(count, file=sys.stdout) if progress else None
        seconds = 0.0
        num_dets = 0
        stage_sum = {}
        empty = pipeline.empty_result()
        for index in range(total):
            if index < count:
                sample = dataset[index]
                meta = dict(sample['data_samples'].metainfo)
                points = sample['inputs']['points']
                points = (points.numpy() if hasattr(points, 'numpy') else
                          np.asarray(points))
                if index == 0:
                    check_pipeline_config(pipeline,
                                          num_features=points.shape[1])
                t0 = time.perf_counter()
                result = pipeline(points)
                seconds += time.perf_counter() - t0
                for k, v in pipeline.stage_times.items():
                    stage_sum[k] = stage_sum.get(k, 0.0) + v
                num_dets += int(result['scores'].shape[0])
                if bar is not None:
                    bar.update()
            else:  # not run: no detections (metainfo without the points)
                info = dataset.get_data_info(index)
                meta = dict(sample_idx=info.get('sample_idx', index))
                result = empty
            evaluator.process(data_samples=[_data_sample(meta, result)])
        if bar is not None:
            sys.stdout.write('\n')
            sys.stdout.flush()
        if num_dets == 0:
            raise NoDetectionsError(
                f'the deployed detector found nothing on any of the '
                f'{count} evaluated frames, so there is nothing to evaluate '
                f'(the nuScenes devkit fails on an empty submission); check '
                f'that the points match the training data (load_dim / '
                f'use_dim, sweeps) and the score threshold in pipeline.json '
                f'(test_cfg.score_thr)')
        metrics = evaluator.evaluate(total)
    finally:
        if tmp is not None:
            tmp.cleanup()
    metrics = {k: (v.item() if hasattr(v, 'item') else v)
               for k, v in dict(metrics).items()}
    return dict(metrics=metrics, num_frames=count, total_frames=total,
                seconds_per_frame=seconds / count, num_detections=num_dets,
                stage_seconds={k: v / count for k, v in stage_sum.items()})
