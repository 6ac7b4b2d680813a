"""Compare two detection sets of one frame (deployed vs PyTorch int8).

The deployed pipeline and the PyTorch int8 model compute the same int8
head maps, so their detections should be the same boxes.  What can still
legitimately differ is the order of *equal* scores: int8 logits take few
distinct values, so several boxes often share a score, and numpy's and
torch's sorts may break those ties differently -- at the ``nms_pre`` /
``max_num`` cut-offs and in NMS (which of two overlapping equal-score boxes
survives).  :func:`match_detections` therefore requires every box to find
a partner (same label, BEV IoU >= ``iou_min``, same score within
``score_tol``) except boxes whose score is shared with another box of the
same set, or with an unmatched box of the other set (a swapped member of a
group of equal scores), and boxes that such a tie-affected box of the other
set overlaps with a higher score (NMS knock-on: there it suppressed them,
or here it is missing and so did not): "tie-explained"; it reports both
counts.
"""
from collections import OrderedDict
from typing import Dict

import numpy as np

from .glue import rotated_iou_bev

__all__ = ['match_detections']

# LiDAR box (x, y, z, dx, dy, dz, yaw) -> BEV (x, y, dx, dy, yaw)
BEV = [0, 1, 3, 4, 6]


def _tied(scores: np.ndarray, tol: float) -> np.ndarray:
    """Which entries share their score (within ``tol``) with another."""
    if scores.size < 2:
        return np.zeros(scores.shape, bool)
    order = np.argsort(scores, kind='stable')
    s = scores[order]
    close = np.abs(np.diff(s)) <= tol
    tied_sorted = np.zeros(s.shape, bool)
    tied_sorted[1:] |= close
    tied_sorted[:-1] |= close
    tied = np.empty_like(tied_sorted)
    tied[order] = tied_sorted
    return tied


def _arrays(dets: Dict[str, np.ndarray]):
    boxes = np.asarray(dets['bboxes'], np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 7)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f'bboxes must be (K, >=7), got {boxes.shape}')
    return (boxes, np.asarray(dets['scores'], np.float64).reshape(-1),
            np.asarray(dets['labels']).reshape(-1))


def match_detections(ref: Dict[str, np.ndarray], out: Dict[str, np.ndarray],
                     iou_min: float = 0.99, score_tol: float = 1e-5,
                     z_tol: float = 1e-2) -> dict:
    """Match ``out`` (e.g. the deployed pipeline) against ``ref`` (e.g. the
    PyTorch int8 model), both ``dict(bboxes, scores, labels)``.

    Greedy in descending reference score: a reference box matches the
    unmatched ``out`` box of the same label with the highest BEV IoU if that
    IoU is >= ``iou_min``, the scores agree within ``score_tol`` and the
    bottom-centre z and height within ``z_tol``.

    Returns ``dict(n_ref, n_out, n_matched, min_iou, max_score_diff,
    unmatched_ref, unmatched_out, unexplained_ref, unexplained_out, ok)``:
    ``unexplained_*`` are unmatched boxes whose score neither another box
    of their set nor an unmatched box of the other set shares (a tie cannot
    explain them); ``ok`` is True when both are 0.
    """
    rb, rs, rl = _arrays(ref)
    ob, os_, ol = _arrays(out)
    used = np.zeros(len(ob), bool)
    matched_ref = np.zeros(len(rb), bool)
    ious, score_diffs = [], []
    for i in np.argsort(-rs, kind='stable'):
        cand = np.flatnonzero((ol == rl[i]) & ~used &
                              (np.abs(os_ - rs[i]) <= score_tol) &
                              (np.abs(ob[:, 2] - rb[i, 2]) <= z_tol) &
                              (np.abs(ob[:, 5] - rb[i, 5]) <= z_tol))
        if cand.size == 0:
            continue
        iou = rotated_iou_bev(rb[i, BEV], ob[cand][:, BEV])
        best = int(np.argmax(iou))
        if iou[best] >= iou_min:
            used[cand[best]] = True
            matched_ref[i] = True
            ious.append(float(iou[best]))
            score_diffs.append(float(abs(os_[cand[best]] - rs[i])))
    un_ref = ~matched_ref
    un_out = ~used
    # swapped ties: an unmatched box of each set with the same score (the
    # two sorts kept different members of a group of equal scores)
    swapped_ref = np.zeros(len(rb), bool)
    swapped_out = np.zeros(len(ob), bool)
    # (the same box under another label is an error, not a swap)
    for i in np.flatnonzero(un_ref):
        j = np.flatnonzero(un_out & ~swapped_out &
                           (np.abs(os_ - rs[i]) <= score_tol))
        if j.size:
            j = j[rotated_iou_bev(rb[i, BEV], ob[j][:, BEV]) < iou_min]
        if j.size:
            swapped_ref[i] = swapped_out[j[0]] = True
    ok_ref = swapped_ref | _tied(rs, score_tol)
    ok_out = swapped_out | _tied(os_, score_tol)
    # knock-on effects in NMS: a box that a tie-affected box of the other
    # set (same label, higher score, overlapping) suppressed there, or
    # failed to suppress because it is absent there
    changed = True
    while changed:
        changed = False
        for un_a, ok_a, ba, sa, la, un_b, ok_b, bb, sb, lb in (
                (un_ref, ok_ref, rb, rs, rl, un_out, ok_out, ob, os_, ol),
                (un_out, ok_out, ob, os_, ol, un_ref, ok_ref, rb, rs, rl)):
            causes = np.flatnonzero(un_b & ok_b)
            for i in np.flatnonzero(un_a & ~ok_a):
                k = causes[(lb[causes] == la[i]) &
                           (sb[causes] >= sa[i] - score_tol)]
                if k.size and (rotated_iou_bev(ba[i, BEV], bb[k][:, BEV])
                               > 0).any():
                    ok_a[i] = changed = True
    bad_ref = np.flatnonzero(un_ref & ~ok_ref)
    bad_out = np.flatnonzero(un_out & ~ok_out)
    unexplained_ref, unexplained_out = len(bad_ref), len(bad_out)
    return OrderedDict(
        n_ref=int(len(rb)), n_out=int(len(ob)),
        n_matched=int(matched_ref.sum()),
        min_iou=min(ious) if ious else None,
        max_score_diff=max(score_diffs) if score_diffs else None,
        unmatched_ref=int(un_ref.sum()), unmatched_out=int(un_out.sum()),
        unexplained_ref=unexplained_ref, unexplained_out=unexplained_out,
        unexplained_ref_index=bad_ref.tolist(),
        unexplained_out_index=bad_out.tolist(),
        ok=unexplained_ref == 0 and unexplained_out == 0)
