"""Model-zoo rows: schema, the README table and the metafiles.

A row (``results/<model>.json``, written by ``tools/benchmark.py --row``)
holds one config + checkpoint: its input size, parameters, GOPs per DPU
subgraph (counted, :mod:`mmdet3d_vitis.quantization.ops_count`), DPU
coverage, float and int8 accuracy (read from the ``report.json`` of each
``tools/quant.py`` quant folder), calibration time, per-stage latency,
peak memory, the versions and machine, and the commands that produced it.

``tools/zoo_table.py results/*.json`` renders every row into

* the README's model-zoo table, between :data:`TABLE_START` and
  :data:`TABLE_END` (rewritten in place), also kept in
  ``results/README_zoo_table.md``;
* one mmdet3d-style ``metafile.yml`` per config folder.

Everything rendered comes from the JSON only, so the outputs are a pure
function of the committed rows.
"""
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from ..errors import UserInputError
from ..fileio import atomic_write

__all__ = ['ROW_SCHEMA', 'TABLE_START', 'TABLE_END', 'int8_method',
           'accuracy_from_report', 'quant_commands', 'load_rows',
           'render_table', 'render_metafiles', 'replace_block', 'write_text']

ROW_SCHEMA = 1
TABLE_START = '<!-- zoo-table:start -->'
TABLE_END = '<!-- zoo-table:end -->'
METHOD_NAMES = OrderedDict(ptq='PTQ', fast_finetune='PTQ + fast finetune',
                           qat='QAT')
ACCURACY_KEYS = ('mAP', 'NDS', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE')


def int8_method(report: dict) -> str:
    """``'qat'``, ``'fast_finetune'`` or ``'ptq'``, as the report says."""
    if report.get('qat'):
        return 'qat'
    if report.get('fast_finetune'):
        return 'fast_finetune'
    return 'ptq'


def _summary(summary: Optional[dict]) -> Optional[dict]:
    if not summary:
        return None
    out = OrderedDict((k, summary[k]) for k in ACCURACY_KEYS if k in summary)
    if summary.get('per_class_AP'):
        out['per_class_AP'] = OrderedDict(summary['per_class_AP'])
    return out


def _rel(path: Optional[str], root: str) -> Optional[str]:
    if not path:
        return path
    path = osp.abspath(path)
    rel = osp.relpath(path, root)
    return path if rel.startswith('..' + os.sep + '..') else rel


def quant_commands(report: dict, quant_dir: str, root: str) -> List[str]:
    """The ``tools/quant.py`` command lines that wrote ``report``'s quant
    folder (rebuilt from its settings and calib.json)."""
    s = report.get('settings') or {}
    calib = report.get('calib') or {}
    qdir = _rel(quant_dir, root)
    cfg = s.get('config') or calib.get('config', 'CONFIG')
    ckpt = s.get('checkpoint') or calib.get('checkpoint', 'CHECKPOINT')
    opts = s.get('cfg_options') or calib.get('cfg_options') or {}
    tail = (' --cfg-options ' + ' '.join(f'{k}={v}' for k, v in opts.items())
            if opts else '')
    cmds = []
    if int8_method(report) == 'qat':
        cmds.append(f'python tools/train.py {cfg} (QAT config, see '
                    f'report qat: {report["qat"].get("float_checkpoint")})')
    elif calib:
        c = (f'python tools/quant.py {cfg} {calib.get("checkpoint", ckpt)} '
             f'--quant_mode calib --quant_dir {qdir} --backend '
             f'{calib.get("backend", "builtin")} --calib_len '
             f'{calib.get("calib_len_requested", calib.get("calib_len"))} '
             f'--calib_sample_method {calib.get("calib_sample_method")} '
             f'--seed {calib.get("seed", 0)}')
        if calib.get('fast_finetune'):
            c += f' --fast_finetune --fft_len {calib.get("fft_len")}'
        cmds.append(c + tail)
    t = f'python tools/quant.py {cfg} {ckpt} --quant_mode test --quant_dir ' \
        f'{qdir}'
    if report.get('deploy_dir'):
        t += ' --dump_xmodel'
    cmds.append(t + tail)
    return cmds


def accuracy_from_report(report: dict, quant_dir: str, root: str) -> dict:
    """One int8 entry of a row from a quant folder's ``report.json``."""
    calib = report.get('calib') or {}
    method = int8_method(report)
    delta = report.get('delta') or {}
    return OrderedDict(
        method=method,
        label=METHOD_NAMES[method],
        quant_dir=_rel(quant_dir, root),
        backend=report.get('backend'),
        bitwidth=report.get('bitwidth'),
        metrics=_summary(report.get('int8')),
        delta=OrderedDict((k, delta[k]) for k in ('mAP', 'NDS')
                          if k in delta),
        calib_seconds=calib.get('seconds'),
        calib_len=calib.get('calib_len'),
        fft_len=calib.get('fft_len') if calib.get('fast_finetune') else None,
        deploy_check_ok=(report.get('deploy_check') or {}).get('ok'),
        commands=quant_commands(report, quant_dir, root))


# ---------------------------------------------------------------------------
# rendering


def load_rows(paths: Sequence[str]) -> List[dict]:
    """Rows sorted by model name (then file name); checks the schema."""
    rows = []
    for path in paths:
        try:
            with open(path) as f:
                row = json.load(f)
        except (OSError, ValueError) as e:
            raise UserInputError(f'{path}: not a readable JSON row ({e})')
        if not isinstance(row, dict) or row.get('schema') != ROW_SCHEMA:
            raise UserInputError(
                f'{path}: not a zoo row of schema {ROW_SCHEMA} (write it '
                'with tools/benchmark.py --row)')
        row = dict(row, _file=path)
        rows.append(row)
    if not rows:
        raise UserInputError('no zoo rows given')
    return sorted(rows, key=lambda r: (r['model'], r['_file']))


def _pct(v) -> str:
    return '-' if v is None else f'{100 * v:.2f}'


def _ms(s) -> str:
    if not s:
        return '-'
    return (f'{s["median_ms"]:.1f} ({s["p10_ms"]:.1f}-'
            f'{s["p90_ms"]:.1f})')


def _count(n) -> str:
    return f'{n / 1e6:.2f} M' if n >= 1e5 else f'{n / 1e3:.1f} K'


def _table_lines(rows, root_file_dir='') -> List[str]:
    header = ('Model', 'Input (voxels x points x dims, BEV)', 'Params',
              'GOPs per DPU subgraph', 'GOPs total (zoo count)',
              'DPU coverage', 'float mAP / NDS', 'int8', 'int8 mAP / NDS',
              'Calib [s]', 'Latency float / int8 [ms] median (p10-p90)',
              'Peak RSS float / int8 [MB]', 'Row')
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    for row in rows:
        inp, ops = row['input'], row['ops']
        subs = ', '.join(f'{n} {s["gops"]:.2f}'
                         for n, s in ops['subgraphs'].items())
        flt = row['accuracy'].get('float')
        fcell = (f'{_pct(flt.get("mAP"))} / {_pct(flt.get("NDS"))}'
                 if flt else '-')
        lat = row.get('latency') or {}
        lcell = (f'{_ms(lat["float"]["total"])} / '
                 f'{_ms(lat["deployed"]["total"])}' if lat else '-')
        mem = row.get('memory') or {}
        mcell = '-'
        if mem.get('deployed_pipeline_mb') is not None:
            mcell = (f'{mem["deployed_pipeline_mb"]:.0f} (imports '
                     f'{mem["deployed_after_imports_mb"]:.0f})')
        if mem.get('float_pytorch_mb') is not None:
            mcell = (f'{mem["float_pytorch_mb"]:.0f} (imports '
                     f'{mem["float_after_imports_mb"]:.0f}) / ' + mcell)
        int8 = row['accuracy'].get('int8') or [None]
        for q in int8:
            m = (q or {}).get('metrics') or {}
            cells = (
                f'[{row["model"]}]({row["config"]})',
                f'{inp["max_voxels"]} x {inp["max_points"]} x '
                f'{inp["point_dims"]}, {inp["bev_grid"][0]} x '
                f'{inp["bev_grid"][1]}',
                _count(ops['params']), subs,
                f'{ops["total_gops"]:.2f} ({ops["total_gops_zoo"]:.2f})',
                f'{100 * ops["dpu_coverage"]:.1f} %', fcell,
                q['label'] if q else '-',
                f'{_pct(m.get("mAP"))} / {_pct(m.get("NDS"))}' if q else '-',
                f'{q["calib_seconds"]:.0f}' if q and q.get(
                    'calib_seconds') is not None else '-',
                lcell, mcell,
                f'[json]({root_file_dir}{osp.basename(row["_file"])})')
            lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def render_table(rows: Sequence[dict], rows_dir: str = 'results/') -> str:
    """The README block (markers included): the table, its conventions and
    the commands that produced each row."""
    out = [TABLE_START,
           '<!-- generated by tools/zoo_table.py from results/*.json; do '
           'not edit by hand -->', '']
    out += _table_lines(rows, rows_dir)
    out += [
        '',
        'mAP / NDS in %, on each config\'s test set. GOPs = 2 x MACs / 1e9 '
        'of every conv / deconv / linear in the traced DPU subgraphs at the '
        'fixed DPU input (max voxels x points per voxel for the pillar '
        'encoder, the scatter grid for the BEV subgraph); in brackets the '
        'zoo count, which counts a transposed conv on its zero-inserted '
        'input as the DPU runs it (the Vitis AI zoo lists its 40000 x 64 '
        'PointPillars at 108 G; the mirror config counts 104.7 G). DPU '
        'coverage = DPU share of all MACs. Latency: one frame per side, '
        'float PyTorch vs the deployed int8 pipeline on ONNX Runtime '
        '(medians over repeats, p10-p90), on the machine in the row file; '
        'peak RSS: a fresh process per side that loads the float model / '
        'the deployed pipeline and runs the frame 3 times (in brackets: its '
        'peak after the imports alone).',
        '',
        'Commands that produced each row:',
        '']
    for row in rows:
        out.append(f'* `{row["model"]}` '
                   f'([{osp.basename(row["_file"])}]'
                   f'({rows_dir}{osp.basename(row["_file"])})):')
        cmds = []
        for q in row['accuracy'].get('int8') or []:
            cmds += q.get('commands') or []
        cmds.append(row['command'])
        out += [f'  * `{c}`' for c in cmds]
    out.append(TABLE_END)
    return '\n'.join(out) + '\n'


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``
    (which carries the markers itself)."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise UserInputError(
            f'no {TABLE_START} ... {TABLE_END} block to rewrite')
    return text[:start] + block.rstrip('\n') + text[end + len(TABLE_END):]


def _metafile(rows: Sequence[dict]) -> str:
    import yaml
    models = []
    for row in rows:
        inp, ops = row['input'], row['ops']
        results = []
        flt = row['accuracy'].get('float')
        dataset = row.get('dataset', {}).get('name', 'nuScenes')
        if flt:
            results.append(OrderedDict([
                ('Task', '3D Object Detection'), ('Dataset', dataset),
                ('Metrics', OrderedDict([
                    ('mAP', round(100 * flt['mAP'], 2)),
                    ('NDS', round(100 * flt['NDS'], 2))]))]))
        for q in row['accuracy'].get('int8') or []:
            m = q.get('metrics') or {}
            if 'mAP' not in m:
                continue
            results.append(OrderedDict([
                ('Task', f'3D Object Detection (int8 {q["label"]})'),
                ('Dataset', dataset),
                ('Metrics', OrderedDict([
                    ('mAP', round(100 * m['mAP'], 2)),
                    ('NDS', round(100 * m['NDS'], 2))]))]))
        meta = OrderedDict([
            ('Training Data', dataset),
            ('Input', f'{inp["max_voxels"]}x{inp["max_points"]}x'
                      f'{inp["point_dims"]}, BEV {inp["bev_grid"][0]}x'
                      f'{inp["bev_grid"][1]}'),
            ('Parameters', int(ops['params'])),
            ('GOPs', round(ops['total_gops'], 3)),
            ('GOPs (zoo count)', round(ops['total_gops_zoo'], 3)),
            ('DPU subgraphs', OrderedDict(
                (n, round(s['gops'], 3))
                for n, s in ops['subgraphs'].items())),
            ('DPU coverage', round(ops['dpu_coverage'], 4)),
        ])
        entry = OrderedDict([
            ('Name', row['model']), ('In Collection', 'PointPillars-DPU'),
            ('Config', row['config']), ('Metadata', meta),
            ('Results', results)])
        if row.get('checkpoint'):
            entry['Weights'] = row['checkpoint']
        models.append(entry)
    doc = OrderedDict([
        ('Collections', [OrderedDict([
            ('Name', 'PointPillars-DPU'),
            ('Metadata', OrderedDict([
                ('Architecture', ['PillarFeatureNet', 'SECOND',
                                  'SECONDFPN', 'Anchor3DHead']),
                ('Deployment', 'Xilinx DPU int8 (mmdet3d_vitis)')])),
            ('README', 'README.md')])]),
        ('Models', models)])

    class _Dumper(yaml.SafeDumper):
        pass

    _Dumper.add_representer(
        OrderedDict,
        lambda d, data: d.represent_mapping('tag:yaml.org,2002:map',
                                            data.items()))
    return ('# generated by tools/zoo_table.py from results/*.json; do not '
            'edit by hand\n' + yaml.dump(doc, Dumper=_Dumper,
                                         sort_keys=False, width=1000))


def render_metafiles(rows: Sequence[dict]) -> Dict[str, str]:
    """``{config folder/metafile.yml: text}`` for the rows' configs."""
    folders = OrderedDict()
    for row in rows:
        folders.setdefault(osp.dirname(row['config']), []).append(row)
    return OrderedDict((osp.join(folder, 'metafile.yml'), _metafile(rs))
                       for folder, rs in folders.items())


def write_text(path: str, text: str) -> None:
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))
