"""``pipeline.json``: what the deploy runtime needs besides the ONNX files.

A deploy folder (``tools/quant.py --quant_mode test --dump_xmodel``) holds
one ONNX file per DPU subgraph and ``pipeline.json``, a versioned manifest::

    {"format": "mmdet3d_vitis.pipeline", "version": 2,
     "model": {"type", "class_names"},
     "points": {"num_features", "load_dim", "use_dim", "sweeps_num"},
     "voxelization": {"voxel_size", "point_cloud_range", "max_num_points",
                      "max_voxels"},
     "decoration": {"with_cluster_center", "with_voxel_center",
                    "with_distance", "channels", "input_scale",
                    "num_voxels"},
     "scatter": {"grid_hw": [H, W], "channels"},
     "subgraphs": [{"name", "file", "inputs": [{"name", "shape", "fix_pos",
                    "scale", "dtype", "layout"}], "outputs": [...same...]},
                   ...],
     "head": {"type", "num_classes", "anchor_generator", "bbox_coder",
              "use_direction_classifier", "dir_offset", "dir_limit_offset",
              "loss_cls", "outputs": [{"name", "role", "level"}]},
     "test_cfg": {"score_thr", "nms_pre", "nms_thr", "max_num",
                  "use_rotate_nms"},
     "source": {...where it came from, informative only...}}

Only PointPillars-type models (DPU subgraphs ``pillar_encoder`` then
``bev``, one head level) are described (version 2; version 1 had float
boundaries).  ``points.num_features``
is the width of the points the runtime takes: the points after the test
pipeline (``load_dim`` / ``use_dim`` of ``LoadPointsFromFile``, multi-sweep
merging), i.e. what the detector's voxelization sees.
``subgraphs[*].inputs / outputs`` give the ONNX tensor names, shapes, the
int8 scales (``2 ** -fix_pos``) at the DPU boundaries and each tensor's
``dtype`` (``int8``: integers on that scale, as the DPU takes and returns
them; ``float32``: quantized / dequantized inside the ONNX model) and
``layout`` (``NCHW`` or the DPU's ``NHWC``).  The builtin backend's folders
have int8 boundaries everywhere (pillars in, NHWC rows out, NHWC canvas
in, NHWC head maps out).

:func:`load_manifest` validates on load and raises :class:`ManifestError`
(a :class:`~mmdet3d_vitis.errors.UserInputError`) naming the problem.
"""
import json
import os.path as osp
from typing import Any, Dict, List

from .glue import AnchorDecoder, DeployInputError

__all__ = [
    'FORMAT', 'MANIFEST_FILE', 'ManifestError', 'SUBGRAPH_ORDER',
    'VERSION', 'load_manifest', 'validate_manifest'
]

FORMAT = 'mmdet3d_vitis.pipeline'
VERSION = 2
MANIFEST_FILE = 'pipeline.json'
SUBGRAPH_ORDER = ('pillar_encoder', 'bev')
HEAD_ROLES = ('cls_score', 'bbox_pred', 'dir_cls_pred')


class ManifestError(DeployInputError):
    """A deploy folder whose ``pipeline.json`` or ONNX files are missing,
    corrupt or inconsistent."""


_REQUIRED = {
    'model': ('type', 'class_names'),
    'points': ('num_features', 'load_dim', 'use_dim'),
    'voxelization': ('voxel_size', 'point_cloud_range', 'max_num_points',
                     'max_voxels'),
    'decoration': ('with_cluster_center', 'with_voxel_center',
                   'with_distance', 'channels', 'input_scale',
                   'num_voxels'),
    'scatter': ('grid_hw', 'channels'),
    'head': ('type', 'num_classes', 'anchor_generator', 'bbox_coder',
             'use_direction_classifier', 'dir_offset', 'dir_limit_offset',
             'outputs'),
    'test_cfg': ('score_thr', 'nms_pre', 'nms_thr', 'max_num',
                 'use_rotate_nms'),
}


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ManifestError(f'{where}: {msg}')


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v, n=None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def _tensor_entries(where: str, entries) -> None:
    _need(isinstance(entries, list) and entries, where,
          'must be a non-empty list')
    for i, e in enumerate(entries):
        _need(isinstance(e, dict) and isinstance(e.get('name'), str), where,
              f'entry {i} has no ONNX tensor "name"')
        for key in ('shape', 'fix_pos', 'scale', 'dtype', 'layout'):
            _need(key in e, where, f'entry {i} ({e["name"]}) has no {key!r}')
        _need(e['dtype'] in ('int8', 'float32'), where,
              f'entry {i} ({e["name"]}): dtype must be int8 or float32, got '
              f'{e["dtype"]!r}')
        _need(e['layout'] in ('NCHW', 'NHWC'), where,
              f'entry {i} ({e["name"]}): layout must be NCHW or NHWC, got '
              f'{e["layout"]!r}')


def validate_manifest(manifest: Any, deploy_dir: str = None,
                      where: str = MANIFEST_FILE) -> Dict[str, Any]:
    """Check ``manifest`` (a parsed ``pipeline.json``); with ``deploy_dir``
    also that the subgraph files exist there.  Returns it."""
    _need(isinstance(manifest, dict), where, 'is not a JSON object')
    fmt = manifest.get('format')
    _need(fmt == FORMAT, where,
          f'"format" is {fmt!r}, expected {FORMAT!r} (not a deploy '
          'manifest of mmdet3d_vitis)')
    version = manifest.get('version')
    _need(version == VERSION, where,
          f'unsupported "version" {version!r}: this mmdet3d_vitis reads '
          f'version {VERSION}; re-export the deploy folder with '
          'tools/quant.py --quant_mode test --dump_xmodel')
    for section, keys in _REQUIRED.items():
        _need(isinstance(manifest.get(section), dict), where,
              f'missing section {section!r}')
        missing = [k for k in keys if k not in manifest[section]]
        _need(not missing, where,
              f'section {section!r} misses {", ".join(missing)}')
    names = manifest['model']['class_names']
    _need(isinstance(names, list) and names and all(
        isinstance(n, str) for n in names), where,
        'model.class_names must be a non-empty list of names')
    _need(_is_int(manifest['points']['num_features'])
          and manifest['points']['num_features'] >= 3, where,
          'points.num_features must be an int >= 3')
    vox = manifest['voxelization']
    _need(_numbers(vox['voxel_size'], 3), where,
          'voxelization.voxel_size must be 3 numbers')
    _need(_numbers(vox['point_cloud_range'], 6), where,
          'voxelization.point_cloud_range must be 6 numbers')
    for key in ('max_num_points', 'max_voxels'):
        _need(_is_int(vox[key]) and vox[key] > 0, where,
              f'voxelization.{key} must be a positive int')
    dec = manifest['decoration']
    _need(_numbers(dec['input_scale'], dec['channels']), where,
          f'decoration.input_scale must be {dec["channels"]} numbers')
    _need(_is_int(dec['num_voxels']) and dec['num_voxels'] >= vox[
        'max_voxels'], where,
        'decoration.num_voxels (the pillar encoder input size) must be an '
        'int >= voxelization.max_voxels')
    sc = manifest['scatter']
    _need(_numbers(sc['grid_hw'], 2) and all(
        _is_int(v) and v > 0 for v in sc['grid_hw']), where,
        'scatter.grid_hw must be two positive ints')
    subgraphs = manifest.get('subgraphs')
    _need(isinstance(subgraphs, list), where, 'missing list "subgraphs"')
    got = [s.get('name') if isinstance(s, dict) else None for s in subgraphs]
    _need(tuple(got) == SUBGRAPH_ORDER, where,
          f'subgraphs are {got}; version {VERSION} describes PointPillars-'
          f'type models with DPU subgraphs {list(SUBGRAPH_ORDER)}')
    for sub in subgraphs:
        sw = f'{where}: subgraph {sub["name"]!r}'
        _need(isinstance(sub.get('file'), str) and sub['file'], sw,
              'has no "file"')
        _need(osp.basename(sub['file']) == sub['file'], sw,
              f'"file" {sub["file"]!r} must be a file name in the deploy '
              'folder')
        _tensor_entries(f'{sw} inputs', sub.get('inputs'))
        _tensor_entries(f'{sw} outputs', sub.get('outputs'))
        if deploy_dir is not None:
            path = osp.join(deploy_dir, sub['file'])
            _need(osp.isfile(path), sw,
                  f'file {path} is missing from the deploy folder')
    head = manifest['head']
    outs = head['outputs']
    bev_outs = [o['name'] for o in subgraphs[1]['outputs']]
    _need(isinstance(outs, list) and len(outs) == len(bev_outs), where,
          f'head.outputs must describe the {len(bev_outs)} bev outputs')
    roles = []
    for o in outs:
        _need(isinstance(o, dict) and o.get('name') in bev_outs
              and o.get('role') in HEAD_ROLES, where,
              f'head.outputs entry {o!r} must name a bev output and a role '
              f'in {HEAD_ROLES}')
        _need(o.get('level', 0) == 0, where,
              'only single-level heads are supported')
        roles.append(o['role'])
    _need(sorted(roles) == sorted(HEAD_ROLES), where,
          f'head.outputs roles are {roles}; need one each of {HEAD_ROLES}')
    _need(head['num_classes'] == len(names), where,
          f'head.num_classes {head["num_classes"]} != '
          f'{len(names)} class names')
    try:
        AnchorDecoder.from_config(head, manifest['test_cfg'])
    except (DeployInputError, KeyError, TypeError, ValueError) as e:
        raise ManifestError(f'{where}: head / test_cfg: {e}') from e
    return manifest


def load_manifest(path: str) -> Dict[str, Any]:
    """Read and validate ``pipeline.json`` (``path`` may be the deploy
    folder).  Raises :class:`ManifestError`."""
    if osp.isdir(path):
        path = osp.join(path, MANIFEST_FILE)
    deploy_dir = osp.dirname(osp.abspath(path))
    if not osp.isfile(path):
        raise ManifestError(
            f'{path} not found: not a deploy folder (write one with '
            'tools/quant.py CONFIG CKPT --quant_mode test --dump_xmodel)')
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ManifestError(f'{path} is not valid JSON: {e}') from e
    return validate_manifest(manifest, deploy_dir, where=path)


def head_output_roles(manifest: Dict[str, Any]) -> Dict[str, str]:
    """``role -> ONNX output name`` of the bev subgraph."""
    return {o['role']: o['name'] for o in manifest['head']['outputs']}


def subgraph_entries(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(manifest['subgraphs'])
