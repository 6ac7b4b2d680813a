"""What ``tools/benchmark.py --row`` / ``--plots`` run (see that tool).

:func:`build_row` returns one model-zoo row (schema in
:mod:`mmdet3d_vitis.deploy.zoo`); :func:`make_plots` writes the three
pictures.  Both take the tool's parsed arguments and the loaded config.
"""
import json
import os
import os.path as osp
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np

from ..errors import UserInputError
from ..fileio import atomic_write_json
from .zoo import ROW_SCHEMA, _rel, _summary, accuracy_from_report

__all__ = ['build_row', 'make_plots', 'environment', 'peak_rss_deployed',
           'peak_rss_float']

PLOT_FILES = OrderedDict(bev='bev_gt_float_int8.png',
                         sqnr='sqnr_per_layer.png',
                         scaling='latency_vs_points.png')


def _read_report(quant_dir: str) -> dict:
    path = osp.join(quant_dir, 'report.json')
    with open(path) as f:
        return json.load(f)


def environment(threads: int) -> dict:
    """Exact versions and the machine."""
    import brevitas
    import mmcv
    import mmengine
    import torch

    from .latency import machine_info, versions
    env = OrderedDict(versions(), mmcv=mmcv.__version__,
                      mmengine=mmengine.__version__,
                      brevitas=getattr(brevitas, '__version__', None),
                      python=platform.python_version())
    try:
        from ..version import __version__
        env['mmdet3d_vitis'] = __version__
    except ImportError:
        pass
    try:
        env['git_commit'] = subprocess.run(
            ['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
            cwd=osp.dirname(osp.dirname(osp.dirname(__file__))),
            timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env['git_commit'] = None
    env['torch_threads'] = torch.get_num_threads()
    return OrderedDict(versions=env, machine=machine_info(threads))


# VmHWM (this process's RSS high-water mark, reset by exec), not
# ru_maxrss, which Linux carries over from the parent across fork + exec.
_HWM_PREAMBLE = r'''
import sys, json
def hwm():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
import numpy as np
sys.path.insert(0, sys.argv[1])
'''
_PEAK_CODE = _HWM_PREAMBLE + r'''
from mmdet3d_vitis.deploy import Pipeline
pts = np.load(sys.argv[3])
before = hwm()
pipe = Pipeline(sys.argv[2], num_threads=int(sys.argv[4]))
for _ in range(3):
    pipe(pts)
print(json.dumps(dict(peak_kb=hwm(), after_import_kb=before)))
'''


_FLOAT_PEAK_CODE = _HWM_PREAMBLE + r'''
from mmengine.registry import init_default_scope
import mmdet3d_vitis
from mmdet3d_vitis.config_utils import load_config
from mmdet3d_vitis.deploy.latency import time_float_model
from mmdet3d_vitis.quantization.quant_runner import load_float_detector
cfg = load_config(sys.argv[2], json.loads(sys.argv[5]) or None,
                  check_data=False)
init_default_scope(cfg.get('default_scope', 'mmdet3d'))
pts = np.load(sys.argv[4])
before = hwm()
from mmdet3d.structures import LiDARInstance3DBoxes
det = load_float_detector(cfg, sys.argv[3])
time_float_model(det, pts, 3, 0, int(sys.argv[6]),
                 dict(box_type_3d=LiDARInstance3DBoxes))
print(json.dumps(dict(peak_kb=hwm(), after_import_kb=before)))
'''


def _run_peak(argv, threads):
    proc = subprocess.run(
        [sys.executable, '-c'] + [str(a) for a in argv],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if proc.returncode != 0:
        raise RuntimeError(f'peak memory run failed: {proc.stderr[-2000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_float(repo: str, config: str, checkpoint: str,
                   cfg_options, points: np.ndarray, threads: int = 1) -> dict:
    """Peak RSS [MB] (VmHWM) of a fresh process that builds the float
    detector and runs it 3 times on ``points`` in PyTorch; also its peak
    after the imports alone."""
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'points.npy')
        np.save(path, points)
        out = _run_peak([_FLOAT_PEAK_CODE, repo, osp.abspath(config),
                         osp.abspath(checkpoint), path,
                         json.dumps(dict(cfg_options or {})), threads],
                        threads)
    return dict(float_pytorch_mb=out['peak_kb'] / 1024.0,
                float_after_imports_mb=out['after_import_kb'] / 1024.0)


def _hwm_mb() -> float:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_deployed(repo: str, deploy_dir: str, points: np.ndarray,
                      threads: int = 1) -> dict:
    """Peak RSS [MB] (VmHWM) of a fresh process that loads the deployed
    pipeline and runs it 3 times on ``points``; also its peak after the
    imports alone (the Python + package baseline)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'points.npy')
        np.save(path, points)
        out = _run_peak([_PEAK_CODE, repo, deploy_dir, path, threads],
                        threads)
    return dict(deployed_pipeline_mb=out['peak_kb'] / 1024.0,
                deployed_after_imports_mb=out['after_import_kb'] / 1024.0)


def _point_dims(cfg) -> int:
    model = cfg.model
    enc = model.get('pts_voxel_encoder') or model.get('voxel_encoder')
    return int(enc.get('in_channels', 4))


def _dataset_info(cfg) -> dict:
    from ..quantization.quant_runner import eval_dataset_cfg
    ds = eval_dataset_cfg(cfg)
    while 'dataset' in ds:
        ds = ds['dataset']
    root = str(ds.get('data_root', ''))
    name = 'nuScenes'
    if 'synthetic' in root or 'Synthetic' in str(ds.get('type', '')):
        name = 'nuScenes-format synthetic'
    return OrderedDict(name=name, type=ds.get('type'), data_root=root,
                       ann_file=ds.get('ann_file'))


def _command(args, repo: str) -> str:
    parts = ['python', 'tools/benchmark.py']
    for a in args.argv:
        if osp.exists(a) and osp.isabs(a):
            a = _rel(a, repo)
        parts.append(a)
    return ' '.join(parts)


def build_row(args, cfg, repo: str, run_latency, load_frame) -> dict:
    from ..quantization.ops_count import count_detector_ops, format_ops_table
    from ..quantization.quant_runner import evaluate, load_float_detector
    start = time.time()
    model = osp.splitext(osp.basename(args.config))[0]
    detector = load_float_detector(cfg, args.checkpoint)
    ops = count_detector_ops(detector)
    print(format_ops_table(ops), flush=True)
    int8, float_summary, float_from = [], None, None
    for q in args.quant_dir:
        report = _read_report(q)
        if float_summary is None and report.get('float'):
            float_summary = _summary(report['float'])
            float_from = _rel(q, repo) + '/report.json'
        int8.append(accuracy_from_report(report, q, repo))
    if float_summary is None:
        work_dir = osp.join(tempfile.gettempdir(), f'benchmark_{model}')
        _, summary = evaluate(cfg, detector, work_dir, 'float')
        float_summary = _summary(summary)
        float_from = 'evaluated by tools/benchmark.py'
    latency = memory = None
    if args.deploy_dir:
        lat = run_latency(args, cfg)
        latency = OrderedDict(
            frame=lat['frame'], repeats=lat['repeats'],
            warmup=lat['warmup'], threads=args.threads,
            float=dict(stages=lat['float']['stages'],
                       total=lat['float']['total'],
                       num_pillars=lat['float']['num_pillars']),
            deployed=dict(stages=lat['deployed']['stages'],
                          total=lat['deployed']['total'],
                          glue=lat['deployed']['glue'],
                          num_pillars=lat['deployed']['num_pillars']),
            glue_share=lat['glue_share'],
            deploy_dir=_rel(args.deploy_dir, repo))
        if not args.no_memory:
            points = load_frame(cfg, args.frame)[0]
            memory = peak_rss_deployed(repo, osp.abspath(args.deploy_dir),
                                       points, args.threads)
            memory.update(peak_rss_float(
                repo, args.config, args.checkpoint, args.cfg_options,
                points, args.threads))
    memory = OrderedDict(memory or {})
    memory['benchmark_process_mb'] = _hwm_mb()
    layer = detector.data_preprocessor.voxel_layer
    inp = ops['input']
    row = OrderedDict(
        schema=ROW_SCHEMA,
        model=model,
        config=_rel(args.config, repo),
        checkpoint=_rel(args.checkpoint, repo),
        dataset=_dataset_info(cfg),
        input=OrderedDict(
            max_voxels=inp['max_voxels'], max_points=inp['max_points'],
            point_dims=_point_dims(cfg),
            pillar_channels=inp['pillar_channels'],
            bev_channels=inp['bev_channels'], bev_grid=inp['bev_grid'],
            voxel_size=[float(v) for v in layer.voxel_size],
            point_cloud_range=[float(v) for v in layer.point_cloud_range]),
        ops=OrderedDict(
            convention=ops['convention'], params=ops['params'],
            subgraphs=OrderedDict(
                (n, OrderedDict(
                    (k, s[k]) for k in ('input_shapes', 'macs', 'gops',
                                        'macs_zoo', 'gops_zoo', 'params',
                                        'dpu_macs', 'cpu_macs', 'layers')))
                for n, s in ops['subgraphs'].items()),
            total_macs=ops['total_macs'], total_gops=ops['total_gops'],
            total_macs_zoo=ops['total_macs_zoo'],
            total_gops_zoo=ops['total_gops_zoo'],
            dpu_gops=ops['dpu_gops'], dpu_coverage=ops['dpu_coverage']),
        accuracy=OrderedDict(float=float_summary, float_from=float_from,
                             int8=int8),
        latency=latency,
        memory=memory,
        environment=environment(args.threads),
        command=_command(args, repo),
        seconds=round(time.time() - start, 1))
    return json.loads(json.dumps(row))


# ---------------------------------------------------------------------------
# pictures


def _int8_quant_dir(args):
    for q in args.quant_dir:
        report = _read_report(q)
        if not report.get('qat'):
            return q, report
    raise UserInputError('--plots needs a PTQ or fast-finetune --quant_dir '
                         '(calibration state) for the int8 model')


def make_plots(args, cfg, load_frame) -> dict:
    from ..quantization.deploy_check import frame_points, int8_detections
    from ..quantization.layer_error import model_sqnr
    from ..quantization.quant_runner import (QuantOptions, build_dataset,
                                             eval_dataset_cfg,
                                             load_float_detector,
                                             load_test_model)
    from .plots import (plot_detection_comparison, plot_latency_scaling,
                        plot_layer_sqnr)
    out_dir = args.plot_dir
    os.makedirs(out_dir, exist_ok=True)
    model = osp.splitext(osp.basename(args.config))[0]
    qdir, report = _int8_quant_dir(args)
    label = 'PTQ + fast finetune' if report.get('fast_finetune') else 'PTQ'
    detector = load_float_detector(cfg, args.checkpoint)
    opts = QuantOptions(config=args.config, checkpoint=args.checkpoint,
                        quant_mode='test', quant_dir=qdir,
                        cfg_options=args.cfg_options)
    qmodel, _, _ = load_test_model(
        opts, load_float_detector(cfg, args.checkpoint))
    dataset = build_dataset(eval_dataset_cfg(cfg))
    if args.plot_frame >= len(dataset):
        raise UserInputError(f'--plot_frame {args.plot_frame}: the test set '
                             f'has {len(dataset)} frames')
    written = OrderedDict()
    # 1. BEV: ground truth, float, int8
    idx = args.plot_frame
    points = frame_points(dataset, idx)
    sample = dataset[idx]['data_samples']
    ann = getattr(sample, 'eval_ann_info', None) or {}
    gt_boxes = ann.get('gt_bboxes_3d')
    gt = dict(bboxes=(gt_boxes.tensor.numpy() if gt_boxes is not None
                      else np.zeros((0, 7))),
              labels=np.asarray(ann.get('gt_labels_3d', np.zeros(0))))
    qmodel.use('quant')
    flt = int8_detections(detector, dataset, idx)
    q8 = int8_detections(qmodel.model, dataset, idx)
    names = list(dataset.metainfo.get('classes', []))
    layer = detector.data_preprocessor.voxel_layer
    info = dataset.get_data_info(idx)
    written['bev'] = plot_detection_comparison(
        points, gt, flt, q8, osp.join(out_dir, PLOT_FILES['bev']),
        class_names=names, point_cloud_range=list(layer.point_cloud_range),
        score_thr=args.score_thr,
        title=f'{model}: test frame {idx} ({info.get("token", "")}), '
        f'{points.shape[0]} points\nground truth vs float vs int8 {label} '
        'detections')
    # 2. SQNR per DPU layer
    n = min(args.sqnr_frames, len(dataset))
    sqnr = model_sqnr(qmodel, dataset, range(n))
    written['sqnr'] = plot_layer_sqnr(
        sqnr, osp.join(out_dir, PLOT_FILES['sqnr']),
        title=f'{model}\nper-layer quantization error: SQNR per DPU layer '
        f'output ({label}, {_rel(qdir, os.getcwd())}), {n} test frames')
    data = OrderedDict(
        bev=dict(frame=idx, num_points=int(points.shape[0]),
                 gt=int(len(gt['labels'])),
                 float=int((flt['scores'] >= args.score_thr).sum()),
                 int8=int((q8['scores'] >= args.score_thr).sum())),
        sqnr=sqnr)
    # 3. latency vs number of points
    if args.deploy_dir:
        from . import Pipeline
        from .latency_scaling import DEFAULT_COUNTS, latency_vs_points
        pts, frame, meta = load_frame(cfg, args.frame)
        pipeline = Pipeline(args.deploy_dir, num_threads=args.threads)
        scaling = latency_vs_points(
            detector, pipeline, pts,
            counts=args.scaling_counts or DEFAULT_COUNTS,
            repeats=args.scaling_repeats, warmup=1, threads=args.threads,
            metainfo=meta)
        scaling['frame'] = dict(frame, num_points=int(pts.shape[0]))
        written['scaling'] = plot_latency_scaling(
            scaling, osp.join(out_dir, PLOT_FILES['scaling']),
            title=f'{model}: latency per stage vs number of points, float '
            'PyTorch vs deployed int8\n(resampled from '
            f'{osp.basename(frame["path"])}, {pts.shape[0]} points)')
        data['scaling'] = scaling
    else:
        print('no --deploy_dir: no latency-vs-points picture')
    data['files'] = written
    atomic_write_json(osp.join(out_dir, 'plots.json'),
                      json.loads(json.dumps(data, default=float)))
    for path in written.values():
        print(f'wrote {path}')
    return data
