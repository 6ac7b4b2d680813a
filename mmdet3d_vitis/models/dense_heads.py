"""Heads of the ported reference models."""
import copy

import torch
from mmdet3d.models.dense_heads import Anchor3DHead
from mmdet3d.models.layers import nms_bev
from mmdet3d.registry import MODELS
from mmdet3d.structures import xywhr2xyxyr

__all__ = ['VitisAnchor3DHead']


@MODELS.register_module()
class VitisAnchor3DHead(Anchor3DHead):
    """mmdet3d's ``Anchor3DHead`` plus class-agnostic NMS, as second.pytorch
    does it (the 6th AI Edge Contest reference: one rotated NMS over all
    classes, each anchor with its best class).

    ``test_cfg.class_agnostic_nms=True`` turns it on; otherwise this is
    ``Anchor3DHead`` unchanged.  mmdet3d's per-class NMS runs first with no
    suppression and no cap (``nms_thr`` > 1, ``max_num`` unbounded), which
    leaves every anchor once per class whose score passes ``score_thr``;
    one rotated NMS over those boxes (an anchor's best class comes first and
    removes its other classes, IoU 1) then keeps ``max_num``: the same as
    taking each anchor's best class before one NMS.

    ``test_cfg.zero_velocity=True`` pads 7-dim boxes with a zero velocity
    (nuScenes-format evaluation reads one).
    """

    def _predict_by_feat_single(self, cls_score_list, bbox_pred_list,
                                dir_cls_pred_list, mlvl_priors, input_meta,
                                cfg=None, rescale=False, **kwargs):
        cfg = self.test_cfg if cfg is None else cfg
        res = self._nms(cls_score_list, bbox_pred_list, dir_cls_pred_list,
                        mlvl_priors, input_meta, cfg, rescale, **kwargs)
        if cfg.get('zero_velocity', False) and res.bboxes_3d.box_dim == 7:
            # a 7-dim model evaluated with NuScenesMetric, which reads a
            # velocity: (vx, vy) = 0, as the reference never predicts it
            t = res.bboxes_3d.tensor
            res.bboxes_3d = type(res.bboxes_3d)(
                torch.cat([t, t.new_zeros(t.shape[0], 2)], 1), box_dim=9)
        return res

    def _nms(self, cls_score_list, bbox_pred_list, dir_cls_pred_list,
             mlvl_priors, input_meta, cfg, rescale=False, **kwargs):
        if not cfg.get('class_agnostic_nms', False):
            return super()._predict_by_feat_single(
                cls_score_list, bbox_pred_list, dir_cls_pred_list,
                mlvl_priors, input_meta, cfg, rescale, **kwargs)
        per_class = copy.deepcopy(cfg)
        per_class.nms_thr = 2.0  # IoU <= 1: nothing suppressed
        per_class.max_num = 1 << 30
        res = super()._predict_by_feat_single(
            cls_score_list, bbox_pred_list, dir_cls_pred_list, mlvl_priors,
            input_meta, per_class, rescale, **kwargs)
        if len(res) == 0:
            return res
        keep = nms_bev(xywhr2xyxyr(res.bboxes_3d.bev), res.scores_3d,
                       cfg.nms_thr)
        return res[keep[:cfg.max_num]]
