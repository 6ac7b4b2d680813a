"""The DPU partition reproduces each supported detector exactly.

Every supported combination is built from a stock mmdet3d config (shrunk:
fewer channels, a small grid, few voxels, same component types), given
random weights and non-trivial BN statistics, and run both as the original
detector and as a :class:`VitisPartitionedDetector` on the same random point
cloud; boxes, scores and labels must match.  The DPU subgraphs must trace
and export to ONNX with the same outputs.
"""
import copy
import os.path as osp

import numpy as np
import onnxruntime as ort
import pytest
import torch
from mmengine.config import Config
from mmengine.utils import get_installed_path

import mmdet3d_vitis  # noqa: F401  (registers the plugin)
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmdet3d.utils import register_all_modules
from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.quantization import (BEV, PILLAR_ENCODER,
                                        UnsupportedModelError,
                                        VitisPartitionedDetector,
                                        partition_detector)

from conftest import ZOO_PP_CONFIG

ATOL = 1e-4
# Nested builds (data preprocessor, losses) resolve in the default scope.
register_all_modules(init_default_scope=True)


def stock_config(path):
    """A config shipped with mmdet3d (what ``mmdet3d::path`` names)."""
    return Config.fromfile(
        osp.join(get_installed_path('mmdet3d'), '.mim', 'configs', path))


def _shrink_test_cfg(model):
    """Few NMS candidates: CPU rotated NMS dominates the test time."""
    test_cfg = model.test_cfg.pts if model.type == 'MVXFasterRCNN' \
        else model.test_cfg
    test_cfg.update(nms_pre=40, max_num=30)


def _shrink_pillars(model, point_range, grid, max_points=16,
                    feat_channels=(16, )):
    """Small grid and channels for a PointPillars-type model dict."""
    pfx = 'pts_' if model.type == 'MVXFasterRCNN' else ''
    voxel_size = [(point_range[3] - point_range[0]) / grid,
                  (point_range[4] - point_range[1]) / grid,
                  point_range[5] - point_range[2]]
    model.data_preprocessor.voxel_layer.update(
        point_cloud_range=point_range, voxel_size=voxel_size,
        max_num_points=max_points, max_voxels=(600, 600))
    model[pfx + 'voxel_encoder'].update(
        feat_channels=list(feat_channels), voxel_size=voxel_size,
        point_cloud_range=point_range)
    model[pfx + 'middle_encoder'].update(
        in_channels=feat_channels[-1], output_shape=[grid, grid])
    model[pfx + 'backbone'].update(
        in_channels=feat_channels[-1], out_channels=[8, 16, 16],
        layer_nums=[1, 1, 1])
    neck = model[pfx + 'neck']
    if neck.type == 'SECONDFPN':
        neck.update(in_channels=[8, 16, 16], out_channels=[8, 8, 8])
        head_channels = 24
    else:
        neck.update(in_channels=[8, 16, 16], out_channels=16)
        head_channels = 16
    model[pfx + 'bbox_head'].update(
        in_channels=head_channels, feat_channels=head_channels)
    _shrink_test_cfg(model)
    return model


def _shrink_second(model):
    """SECOND with a 64 x 64 x 41 sparse grid and thin sparse convs."""
    point_range = [0, -3.2, -3, 6.4, 3.2, 1]
    model.data_preprocessor.voxel_layer.update(
        point_cloud_range=point_range, voxel_size=[0.1, 0.1, 0.1],
        max_voxels=(1500, 1500))
    model.middle_encoder.update(
        sparse_shape=[41, 64, 64], base_channels=8, output_channels=16,
        encoder_channels=((8, ), (8, 8, 8), (16, 16, 16), (16, 16, 16)))
    model.backbone.update(
        in_channels=32, out_channels=[16, 32], layer_nums=[1, 1])
    model.neck.update(in_channels=[16, 32], out_channels=[16, 16])
    model.bbox_head.update(in_channels=32, feat_channels=32)
    _shrink_test_cfg(model)
    return model


def _nus_hardvfe(name, **encoder):
    def make():
        cfg = stock_config(f'pointpillars/{name}')
        cfg.model.pts_voxel_encoder.update(encoder)
        return _shrink_pillars(cfg.model, [-8, -8, -5, 8, 8, 3], 32,
                               feat_channels=(8, 16)), 4

    return make


def _kitti_pfn():
    cfg = stock_config(
        'pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-'
        '3class.py')
    # legacy=True (the default) plus distance: the in-place quirk matters.
    cfg.model.voxel_encoder.update(with_distance=True)
    return _shrink_pillars(cfg.model, [0, -8, -3, 16, 8, 1], 32), 4


def _zoo():
    cfg = Config.fromfile(ZOO_PP_CONFIG)
    return _shrink_pillars(cfg.model, [-8, -8, -5, 8, 8, 3], 32), 5


def _second():
    cfg = stock_config(
        'second/second_hv_secfpn_8xb6-80e_kitti-3d-3class.py')
    return _shrink_second(cfg.model), 4


MODELS_UNDER_TEST = {
    # MVXFasterRCNN + HardVFE (2 layers: cat_max) + mmdet FPN (3 levels)
    'hardvfe_fpn': _nus_hardvfe(
        'pointpillars_hv_fpn_sbn-all_8xb4-2x_nus-3d.py', with_distance=True),
    # MVXFasterRCNN + HardVFE + SECONDFPN
    'hardvfe_secfpn': _nus_hardvfe(
        'pointpillars_hv_secfpn_sbn-all_8xb4-2x_nus-3d.py'),
    # VoxelNet + legacy PillarFeatureNet + SECONDFPN
    'pfn_kitti': _kitti_pfn,
    # MVXFasterRCNN + PillarFeatureNet(legacy=False), the project's zoo mirror
    'zoo': _zoo,
    # VoxelNet + HardSimpleVFE + spconv SparseEncoder
    'second': _second,
}


def randomize(detector, seed=0):
    """Random weights and BN statistics far from the identity."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in detector.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n) * 0.5)
                module.running_var.copy_(torch.rand(n) + 0.5)
                module.weight.copy_(torch.rand(n) + 0.5)
                module.bias.copy_(torch.randn(n) * 0.2)
    return detector.eval()


def build(model_cfg, seed=0):
    torch.manual_seed(seed)
    return randomize(MODELS.build(copy.deepcopy(model_cfg)), seed)


def random_points(detector, num_features, num_points=1500, seed=0):
    """Points inside the detector's voxelization range."""
    layer = detector.data_preprocessor.voxel_layer
    lo = torch.tensor(layer.point_cloud_range[:3])
    hi = torch.tensor(layer.point_cloud_range[3:])
    gen = torch.Generator().manual_seed(seed)
    xyz = lo + (hi - lo) * torch.rand(num_points, 3, generator=gen) * 0.999
    extra = torch.rand(num_points, num_features - 3, generator=gen)
    return torch.cat([xyz, extra], dim=1)


def make_data(points_list):
    """A fresh test-step batch (models write their results into it)."""
    samples = [
        Det3DDataSample(metainfo=dict(box_type_3d=LiDARInstance3DBoxes))
        for _ in points_list
    ]
    return dict(inputs=dict(points=[p.clone() for p in points_list]),
                data_samples=samples)


def assert_same_detections(expected, actual):
    assert len(expected) == len(actual)
    total = 0
    for exp, act in zip(expected, actual):
        exp, act = exp.pred_instances_3d, act.pred_instances_3d
        assert len(exp) == len(act)
        total += len(exp)
        torch.testing.assert_close(
            act.bboxes_3d.tensor, exp.bboxes_3d.tensor, atol=ATOL, rtol=0)
        torch.testing.assert_close(
            act.scores_3d, exp.scores_3d, atol=ATOL, rtol=0)
        assert torch.equal(act.labels_3d, exp.labels_3d)
    assert total > 0, 'no detections: the comparison would prove nothing'


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """spconv's CPU sparse convs sum in thread order (relative differences
    of ~1e-3 between two runs of the same model); one thread makes every
    run exact, so differences can only come from the partition."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module', params=list(MODELS_UNDER_TEST))
def case(request):
    model_cfg, num_features = MODELS_UNDER_TEST[request.param]()
    detector = build(model_cfg)
    points = random_points(detector, num_features)
    return request.param, model_cfg, detector, points


def test_predict_matches_original(case):
    name, _, detector, points = case
    wrapper = VitisPartitionedDetector(detector).eval()
    expected = detector.test_step(make_data([points]))
    actual = wrapper.test_step(make_data([points]))
    assert_same_detections(expected, actual)
    expected_names = [BEV] if name == 'second' else [PILLAR_ENCODER, BEV]
    assert wrapper.subgraph_names == expected_names


def test_pillar_input_scale_is_exact_and_normalises(case):
    """Power-of-two input normalisation: the DPU input of each channel lies
    in [-1, 1] and the detections stay bit-for-bit the same."""
    name, _, detector, points = case
    if name == 'second':
        pytest.skip('SECOND has no pillar encoder subgraph')
    wrapper = VitisPartitionedDetector(detector).eval()
    expected = wrapper.test_step(make_data([points]))
    seen = []
    handle = wrapper.get_subgraph(PILLAR_ENCODER).register_forward_pre_hook(
        lambda mod, inputs: seen.append(inputs[0].abs().amax(dim=(0, 2, 3))))
    wrapper.test_step(make_data([points]))
    raw_max = seen[-1]
    scale = wrapper.partition.set_pillar_input_scale(raw_max)
    wrapper.test_step(make_data([points]))
    handle.remove()
    assert torch.all(torch.log2(scale) == torch.round(torch.log2(scale)))
    assert torch.all(seen[-1] <= 1) and torch.all(seen[-1][raw_max > 0] > .5)
    assert not torch.all(scale == 1)  # the scaling did something
    actual = wrapper.test_step(make_data([points]))
    for exp, act in zip(expected, actual):
        assert torch.equal(exp.pred_instances_3d.scores_3d,
                           act.pred_instances_3d.scores_3d)
        assert torch.equal(exp.pred_instances_3d.bboxes_3d.tensor,
                           act.pred_instances_3d.bboxes_3d.tensor)


def test_batch_runs_per_sample(case):
    _, _, detector, points = case
    other = random_points(detector, points.shape[1], num_points=900, seed=1)
    wrapper = VitisPartitionedDetector(detector).eval()
    calls = []
    bev = wrapper.get_subgraph(BEV)
    handle = bev.register_forward_pre_hook(
        lambda mod, inputs: calls.append(inputs[0].shape[0]))
    try:
        actual = wrapper.test_step(make_data([points, other]))
    finally:
        handle.remove()
    assert calls == [1, 1]
    assert_same_detections(
        detector.test_step(make_data([points, other])), actual)


def test_subgraphs_trace_export_and_swap(case, tmp_path):
    """Each DPU subgraph traces (torch.jit, torch.fx), exports to ONNX
    (opset 17) with the same outputs, and the traced module can replace it
    in the wrapper."""
    _, _, detector, points = case
    wrapper = VitisPartitionedDetector(detector).eval()
    expected = detector.test_step(make_data([points]))
    for name in wrapper.subgraph_names:
        sub = wrapper.get_subgraph(name)
        # Few voxels keep the export cheap; the DPU default is max_voxels.
        inputs = wrapper.example_inputs(name, num_voxels=50)
        with torch.no_grad():
            ref = sub(*inputs)
            traced = torch.jit.trace(sub, inputs)
            refs = ref if isinstance(ref, tuple) else (ref, )
            outs = traced(*inputs)
            for r, o in zip(refs, outs if isinstance(outs, tuple) else
                            (outs, )):
                torch.testing.assert_close(o, r)
            # fx-based quantizers (brevitas) trace symbolically.
            graph_outs = torch.fx.symbolic_trace(sub)(*inputs)
            for r, o in zip(refs, graph_outs if isinstance(
                    graph_outs, tuple) else (graph_outs, )):
                torch.testing.assert_close(o, r)
        path = str(tmp_path / f'{name}.onnx')
        torch.onnx.export(sub, inputs, path, opset_version=17, dynamo=False,
                          input_names=['input'])
        session = ort.InferenceSession(path,
                                       providers=['CPUExecutionProvider'])
        onnx_outs = session.run(None, {'input': inputs[0].numpy()})
        assert len(onnx_outs) == len(refs)
        for r, o in zip(refs, onnx_outs):
            np.testing.assert_allclose(o, r.numpy(), atol=ATOL, rtol=1e-4)
        wrapper.set_subgraph(name, traced)
    # The traced pillar encoder was traced on 50 voxels but serves any count.
    assert_same_detections(expected,
                           wrapper.test_step(make_data([points])))


def test_swapped_subgraph_is_used(case):
    _, _, detector, points = case
    wrapper = VitisPartitionedDetector(detector).eval()
    before = wrapper.test_step(make_data([points]))
    bev = wrapper.get_subgraph(BEV)

    class Shifted(torch.nn.Module):
        def forward(self, x):
            return tuple(o + 1.0 for o in bev(x))

    wrapper.set_subgraph(BEV, Shifted())
    after = wrapper.test_step(make_data([points]))
    assert not torch.allclose(before[0].pred_instances_3d.scores_3d[:1],
                              after[0].pred_instances_3d.scores_3d[:1])
    with pytest.raises(KeyError, match='no DPU subgraph'):
        wrapper.set_subgraph('backbone', bev)


def test_fixed_voxel_padding(case):
    _, _, detector, points = case
    wrapper = VitisPartitionedDetector(detector, voxel_padding=600).eval()
    if PILLAR_ENCODER in wrapper.subgraph_names:
        seen = []
        wrapper.get_subgraph(PILLAR_ENCODER).register_forward_pre_hook(
            lambda mod, inputs: seen.append(inputs[0].shape[2]))
    else:
        seen = [600]  # SECOND has no pillar encoder to pad
    assert_same_detections(detector.test_step(make_data([points])),
                           wrapper.test_step(make_data([points])))
    assert seen == [600]


def test_config_built_wrapper_loads_checkpoint(tmp_path):
    model_cfg, num_features = _kitti_pfn()
    detector = build(model_cfg)
    ckpt = str(tmp_path / 'float.pth')
    torch.save({'state_dict': detector.state_dict()}, ckpt)
    wrapper = MODELS.build(
        dict(type='VitisPartitionedDetector', detector=model_cfg,
             checkpoint=ckpt)).eval()
    # A runner calls init_weights; it must not undo the checkpoint.
    wrapper.init_weights()
    points = random_points(detector, num_features)
    assert_same_detections(detector.test_step(make_data([points])),
                           wrapper.test_step(make_data([points])))
    # mode='tensor' gives the head maps of the original detector.
    # Fresh voxels for each: legacy PillarFeatureNet writes into its input.
    expected = detector(
        detector.data_preprocessor(make_data([points]))['inputs'],
        mode='tensor')
    actual = wrapper(
        wrapper.data_preprocessor(make_data([points]))['inputs'],
        mode='tensor')
    assert len(actual) == 3 and len(actual[0]) == 1
    # extract_feat gives the bev subgraph input: the scattered pillars.
    inputs = wrapper.data_preprocessor(make_data([points]))['inputs']
    voxels = inputs['voxels']
    expected_bev = detector.middle_encoder(
        detector.voxel_encoder(voxels['voxels'].clone(),
                               voxels['num_points'], voxels['coors']),
        voxels['coors'], 1)
    torch.testing.assert_close(wrapper.extract_feat(inputs), expected_bev,
                               atol=ATOL, rtol=0)
    for exp_maps, act_maps in zip(expected, actual):
        for exp, act in zip(exp_maps, act_maps):
            torch.testing.assert_close(act, exp, atol=ATOL, rtol=0)


def test_zoo_config_partitions_at_full_size():
    cfg = Config.fromfile(ZOO_PP_CONFIG)
    detector = MODELS.build(cfg.model).eval()
    partition = partition_detector(detector)
    assert partition.subgraph_names == [PILLAR_ENCODER, BEV]
    # 5 point features + 3 cluster + 3 centre offsets, 40000 x 64 (zoo).
    pillar_in, = partition.example_inputs(PILLAR_ENCODER)
    assert tuple(pillar_in.shape) == (1, 11, 40000, 64)
    bev_in, = partition.example_inputs(BEV)
    assert tuple(bev_in.shape) == (1, 64, 400, 400)
    layers = list(partition.subgraphs[PILLAR_ENCODER])
    assert [type(m).__name__ for m in layers[0].children()] == [
        'Conv2d', 'BatchNorm2d', 'ReLU', 'MaxPool2d']
    assert layers[0].pool.kernel_size == (1, 64)
    # The BEV subgraph runs the detector's own layers (shared weights), with
    # the nuScenes NaiveSyncBatchNorm2d as plain BatchNorm2d sharing the
    # same tensors, so that torch.fx can trace it.
    bev = partition.subgraphs[BEV]
    ours, theirs = bev.backbone.blocks[0], detector.pts_backbone.blocks[0]
    assert ours[0] is theirs[0]
    assert type(theirs[1]).__name__ == 'NaiveSyncBatchNorm2d'
    assert type(ours[1]) is torch.nn.BatchNorm2d
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        assert getattr(ours[1], name) is getattr(theirs[1], name)
    assert bev.head is detector.pts_bbox_head  # nothing to replace there
    assert len(partition.subgraphs[BEV].output_names) == 3


def test_unsupported_backbone_is_named():
    model_cfg, _ = _kitti_pfn()
    model_cfg.backbone = dict(type='PointNet2SASSG', in_channels=4)
    detector = MODELS.build(model_cfg)
    with pytest.raises(UnsupportedModelError) as err:
        partition_detector(detector)
    message = str(err.value)
    assert 'PointNet2SASSG' in message and 'backbone' in message
    assert 'SECOND' in message
    assert issubclass(UnsupportedModelError, UserInputError)


def test_unsupported_head_and_detector_are_named():
    cfg = stock_config(
        'centerpoint/centerpoint_pillar02_second_secfpn_8xb4-'
        'cyclic-20e_nus-3d.py')
    model_cfg = cfg.model
    model_cfg.pts_backbone.update(out_channels=[8, 8, 8], layer_nums=[1, 1,
                                                                      1])
    model_cfg.pts_neck.update(in_channels=[8, 8, 8], out_channels=[8, 8, 8])
    model_cfg.pts_bbox_head.update(in_channels=24)
    with pytest.raises(UnsupportedModelError, match='CenterPoint'):
        partition_detector(MODELS.build(copy.deepcopy(model_cfg)))
    # The same components in a supported detector: the head is named.
    model_cfg.type = 'MVXFasterRCNN'
    with pytest.raises(UnsupportedModelError,
                       match=r'bbox head CenterHead \(pts_bbox_head\)'):
        partition_detector(MODELS.build(model_cfg))
