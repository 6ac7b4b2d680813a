"""The demo's machine-readable report and nuScenes metric summaries."""
import json
import os.path as osp
from typing import Any, Dict, Mapping

from .fileio import atomic_write_json


def update_report(path: str, section: str, data: Any) -> Dict:
    """Set ``report[section] = data`` in the JSON report at ``path``."""
    report = {}
    if osp.isfile(path):
        with open(path) as f:
            report = json.load(f)
    report[section] = data
    atomic_write_json(path, report)
    return report


def summarize_nuscenes_metrics(metrics: Mapping[str, float]) -> Dict:
    """mAP, NDS and per-class AP from ``NuScenesMetric``'s flat dict.

    Per-class AP is the nuScenes one: the mean over the centre-distance
    thresholds 0.5, 1, 2 and 4 m.
    """
    summary: Dict[str, Any] = {'per_class_AP': {}}
    per_class: Dict[str, list] = {}
    for key, value in metrics.items():
        name = key.rsplit('/', 1)[-1]
        if name in ('mAP', 'NDS', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE'):
            summary[name] = float(value)
        elif '_AP_dist_' in name:
            cls = name.split('_AP_dist_')[0]
            per_class.setdefault(cls, []).append(float(value))
    for cls, values in per_class.items():
        summary['per_class_AP'][cls] = sum(values) / len(values)
    return summary


def format_summary(summary: Mapping, title: str = '') -> str:
    lines = [title] if title else []
    lines.append(f"mAP {summary.get('mAP', float('nan')):.4f}  "
                 f"NDS {summary.get('NDS', float('nan')):.4f}")
    for cls, ap in summary.get('per_class_AP', {}).items():
        lines.append(f'  {cls:<22s} AP {ap:.4f}')
    return '\n'.join(lines)
