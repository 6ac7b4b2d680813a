"""Per-stage latency of a PointPillars-type detector on one frame.

Two sides, timed on the same points in the same process:

* ``float``: the mmdet3d model in PyTorch (under ``torch.no_grad`` with a
  fixed torch thread count), split as the deployed frame is:
  ``voxelize`` (the data preprocessor's mmcv ``Voxelization``),
  ``subgraph0`` (the voxel encoder), ``scatter`` (the middle encoder,
  mmdet3d's ``PointPillarsScatter``), ``subgraph1`` (backbone + neck + head
  forward) and ``decode_nms`` (the head's ``predict_by_feat``);
* ``deployed``: :class:`~mmdet3d_vitis.deploy.Pipeline` (compiled glue +
  the int8 ONNX subgraphs on ONNX Runtime) from its ``stage_times``:
  ``voxelize`` (``check_points`` + ``voxelize``, which includes the pillar
  decoration, each also reported on its own), ``subgraph0``
  (``pillar_encoder``), ``scatter``,
  ``subgraph1`` (``bev``) and ``decode_nms`` (``decode``).

Every stage is summarised over ``repeats`` timed runs after ``warmup``
untimed ones as median / p10 / p90 / min / max in milliseconds.  The
deployed side also reports ``glue`` (everything but the two ONNX subgraphs)
and its share of the frame, and the scatter speedup over
``PointPillarsScatter``.

The deployed scatter reuses its int8 NHWC canvas and clears the cells the
previous frame wrote; ``scatter_all_stale`` also times it with every cell
of the previous frame elsewhere (a disjoint pillar set of the same size
written before each run), the worst case for a stream.
"""
import os
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np


__all__ = [
    'STAGES', 'DEPLOY_DETAIL', 'summarize', 'machine_info', 'versions',
    'time_float_model', 'time_deployed', 'time_scatter_all_stale',
    'latency_report', 'format_latency_table'
]

#: the stages both sides report, in execution order
STAGES = ('voxelize', 'subgraph0', 'scatter', 'subgraph1', 'decode_nms')
#: which of Pipeline.stage_times make each reported deployed stage
DEPLOY_GROUPS = {
    'voxelize': ('check_points', 'voxelize'),
    'subgraph0': ('pillar_encoder', ),
    'scatter': ('scatter', ),
    'subgraph1': ('bev', ),
    'decode_nms': ('decode', ),
}
#: Pipeline stages reported on their own as well
DEPLOY_DETAIL = ('check_points', 'voxelize')
#: the ONNX Runtime stages; the rest of a deployed frame is glue
SUBGRAPH_STAGES = ('pillar_encoder', 'bev')


def summarize(seconds: Sequence[float]) -> Dict[str, float]:
    """Median / p10 / p90 / min / max of ``seconds``, in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    if ms.size == 0:
        raise ValueError('no samples')
    return dict(
        median_ms=float(np.median(ms)),
        p10_ms=float(np.percentile(ms, 10)),
        p90_ms=float(np.percentile(ms, 90)),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        n=int(ms.size))


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return dict(cpu=_cpu_model(), logical_cores=os.cpu_count(),
                usable_cores=usable, threads=int(threads),
                loadavg_1_5_15=load, platform=platform.platform(),
                python=platform.python_version())


def versions() -> dict:
    import mmdet3d
    import onnxruntime
    import torch
    return dict(torch=torch.__version__, onnxruntime=onnxruntime.__version__,
                mmdet3d=mmdet3d.__version__, numpy=np.__version__)


def _repeat(run: Callable[[], Dict[str, float]], repeats: int,
            warmup: int) -> Dict[str, List[float]]:
    """``run()`` returns seconds per stage; lists of them over repeats."""
    for _ in range(warmup):
        run()
    samples: Dict[str, List[float]] = {}
    for _ in range(repeats):
        for name, sec in run().items():
            samples.setdefault(name, []).append(sec)
    return samples


def _part(detector, name: str):
    """``pts_<name>`` (MVXTwoStageDetector) or ``<name>`` (VoxelNet)."""
    for attr in (f'pts_{name}', name):
        mod = getattr(detector, attr, None)
        if mod is not None:
            return mod
    raise AttributeError(f'{type(detector).__name__} has no {name}')


def time_float_model(detector, points: np.ndarray, repeats: int, warmup: int,
                     threads: int, metainfo: Optional[dict] = None) -> dict:
    """Per-stage seconds of the mmdet3d detector (eval mode) on ``points``.

    Returns ``dict(stages={stage: summary}, total=summary, num_pillars,
    num_detections)``.
    """
    import torch
    from mmdet3d.structures import Det3DDataSample
    torch.set_num_threads(int(threads))
    detector.eval()
    pre = detector.data_preprocessor
    voxel_encoder = _part(detector, 'voxel_encoder')
    middle_encoder = _part(detector, 'middle_encoder')
    backbone = _part(detector, 'backbone')
    neck = _part(detector, 'neck')
    head = _part(detector, 'bbox_head')
    pts = torch.from_numpy(np.ascontiguousarray(points, np.float32))
    sample = Det3DDataSample(metainfo=dict(metainfo or {}))
    metas = [sample.metainfo]
    info = {}

    def run():
        t = {}
        t0 = time.perf_counter()
        vox = pre.voxelize([pts], [sample])
        t1 = time.perf_counter()
        feats = voxel_encoder(vox['voxels'], vox['num_points'], vox['coors'])
        t2 = time.perf_counter()
        bev = middle_encoder(feats, vox['coors'], 1)
        t3 = time.perf_counter()
        x = backbone(bev)
        if neck is not None:
            x = neck(x)
        outs = head(x)
        t4 = time.perf_counter()
        res = head.predict_by_feat(*outs, batch_input_metas=metas,
                                   rescale=False)
        t5 = time.perf_counter()
        t.update(voxelize=t1 - t0, subgraph0=t2 - t1, scatter=t3 - t2,
                 subgraph1=t4 - t3, decode_nms=t5 - t4, total=t5 - t0)
        info.update(num_pillars=int(vox['voxels'].shape[0]),
                    num_detections=int(len(res[0].scores_3d)))
        return t

    with torch.no_grad():
        samples = _repeat(run, repeats, warmup)
    return dict(stages={s: summarize(samples[s]) for s in STAGES},
                total=summarize(samples['total']), **info)


def time_deployed(pipeline, points: np.ndarray, repeats: int,
                  warmup: int) -> dict:
    """Per-stage seconds of a :class:`~mmdet3d_vitis.deploy.Pipeline`.

    Returns ``dict(stages={stage: summary}, detail={pipeline stage:
    summary}, glue=summary, total=summary, glue_share, num_pillars,
    num_detections)``; ``glue_share`` is the median glue time over the
    median frame time.
    """
    info = {}

    def run():
        out = pipeline(points)
        st = dict(pipeline.stage_times)
        if not set(SUBGRAPH_STAGES) <= set(st):
            raise ValueError('the frame has no pillar: nothing to time')
        t = {k: sum(st[s] for s in v) for k, v in DEPLOY_GROUPS.items()}
        t.update({f'detail.{k}': st[k] for k in DEPLOY_DETAIL})
        t['total'] = sum(st.values())
        t['glue'] = t['total'] - sum(st[s] for s in SUBGRAPH_STAGES)
        info.update(num_detections=int(out['scores'].shape[0]))
        return t

    samples = _repeat(run, repeats, warmup)
    total = summarize(samples['total'])
    glue = summarize(samples['glue'])
    return dict(
        stages={s: summarize(samples[s]) for s in STAGES},
        detail={k: summarize(samples[f'detail.{k}']) for k in DEPLOY_DETAIL},
        glue=glue, total=total,
        glue_share=glue['median_ms'] / total['median_ms'], **info)


def time_scatter_all_stale(pipeline, points: np.ndarray, repeats: int,
                           warmup: int) -> dict:
    """The deployed scatter when every cell of the previous frame is stale.

    Scatters the frame's pillars (the pillar encoder's real int8 output)
    after, each time, an untimed scatter of as many pillars on cells the
    frame does not use.
    """
    pipeline(points)  # voxelizes the frame into the pipeline's buffers
    coors = pipeline.voxel_coors().copy()
    enc = pipeline.sessions['pillar_encoder']
    rows = enc.run(None,
                   {enc.get_inputs()[0].name: pipeline.encoder_input()})[0]
    height, width = pipeline.grid_hw
    cells = coors[:, 1].astype(np.int64) * width + coors[:, 2]
    free = np.setdiff1d(np.arange(height * width), cells)[:cells.shape[0]]
    other = np.zeros((free.shape[0], 3), np.int32)
    other[:, 1], other[:, 2] = free // width, free % width
    other_rows = np.ones_like(rows)

    def run():
        pipeline.scatter(other_rows, other)
        t0 = time.perf_counter()
        pipeline.scatter(rows, coors)
        return dict(scatter=time.perf_counter() - t0)

    out = summarize(_repeat(run, repeats, warmup)['scatter'])
    out['num_stale_cells'] = int(free.shape[0])
    out['num_pillars'] = int(cells.shape[0])
    return out


def latency_report(detector, pipeline, points: np.ndarray, frame: dict,
                   repeats: int = 20, warmup: int = 3, threads: int = 1,
                   metainfo: Optional[dict] = None) -> dict:
    """Both sides on ``points``; a JSON-able dict (see the module doc)."""
    import torch
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError('repeats >= 1, warmup >= 0 and threads >= 1')
    torch.set_num_threads(int(threads))
    float_side = time_float_model(detector, points, repeats, warmup, threads,
                                  metainfo)
    deployed = time_deployed(pipeline, points, repeats, warmup)
    stale = time_scatter_all_stale(pipeline, points, repeats, warmup)
    pps = float_side['stages']['scatter']['median_ms']
    return dict(
        frame=dict(frame, num_points=int(points.shape[0]),
                   num_features=int(points.shape[1])),
        machine=machine_info(threads),
        versions=versions(),
        repeats=int(repeats), warmup=int(warmup),
        float=float_side,
        deployed=dict(deployed, num_pillars=stale['num_pillars'],
                      scatter_all_stale=stale),
        glue_share=deployed['glue_share'],
        scatter_speedup=pps / deployed['stages']['scatter']['median_ms'],
        scatter_speedup_all_stale=pps / stale['median_ms'])


def format_latency_table(report: dict) -> str:
    """A fixed-width table of the medians (p10..p90) of both sides."""
    flt, dep = report['float'], report['deployed']

    def cell(s):
        return (f'{s["median_ms"]:9.2f} ({s["p10_ms"]:.2f}..'
                f'{s["p90_ms"]:.2f})')

    names = dict(voxelize='voxelize', subgraph0='subgraph 0 (pillar enc)',
                 scatter='scatter', subgraph1='subgraph 1 (bev + head)',
                 decode_nms='decode + NMS')
    width = 30
    lines = [
        f'{"stage [ms], median (p10..p90)":<26} {"float PyTorch":>{width}} '
        f'{"deployed int8 ORT":>{width}}'
    ]
    for s in STAGES:
        lines.append(f'{names[s]:<26} {cell(flt["stages"][s]):>{width}} '
                     f'{cell(dep["stages"][s]):>{width}}')
    for k in DEPLOY_DETAIL:
        lines.append(f'{"  deployed " + k:<26} {"":>{width}} '
                     f'{cell(dep["detail"][k]):>{width}}')
    lines.append(f'{"frame total":<26} {cell(flt["total"]):>{width}} '
                 f'{cell(dep["total"]):>{width}}')
    lines.append(f'{"glue (all but subgraphs)":<26} {"":>{width}} '
                 f'{cell(dep["glue"]):>{width}}')
    fr, m = report['frame'], report['machine']
    lines += [
        'glue share of the deployed frame: '
        f'{100 * report["glue_share"]:.2f} %',
        f'scatter speedup over PointPillarsScatter: '
        f'{report["scatter_speedup"]:.1f}x (steady state), '
        f'{report["scatter_speedup_all_stale"]:.1f}x (all previous cells '
        f'stale: {cell(dep["scatter_all_stale"]).strip()} ms)',
        f'pillars: {flt["num_pillars"]} (float) / {dep["num_pillars"]} '
        f'(deployed); detections: {flt["num_detections"]} (float) / '
        f'{dep["num_detections"]} (deployed)',
        f'frame: {fr["path"]} ({fr["num_points"]} points x '
        f'{fr["num_features"]}); {report["repeats"]} repeats after '
        f'{report["warmup"]} warmup',
        f'machine: {m["cpu"]}, {m["usable_cores"]} usable cores, '
        f'{m["threads"]} thread(s), load {m["loadavg_1_5_15"]}',
    ]
    return '\n'.join(lines)
