"""Per-layer DPU/CPU placement, shapes and MACs from the inspector."""
import json

import pytest
import torch
from mmengine.config import Config

import mmdet3d_vitis  # noqa: F401  (the zoo config imports the plugin)
from mmdet3d_vitis.quantization import format_table, inspect_detector
from mmdet3d_vitis.quantization.inspector import (CPU, DPU, REASON_DENSIFY,
                                                  REASON_NMS, REASON_SCATTER,
                                                  REASON_SPARSE_CONV,
                                                  REASON_SPARSE_FEATS,
                                                  REASON_VOXELIZATION, UNUSED)

from conftest import ZOO_PP_CONFIG
from test_partition import MODELS_UNDER_TEST, build, random_points


def rows(report, op=None, name=None):
    return [
        layer for layer in report.layers
        if (op is None or layer.op == op) and (name is None
                                               or layer.name == name)
    ]


@pytest.fixture(scope='module')
def zoo_report():
    """The zoo PointPillars mirror at full width on a 16 m x 16 m patch
    (the 100 m grid would cost ~100 GMACs on the CPU; the share does not
    depend on the grid size)."""
    cfg = Config.fromfile(ZOO_PP_CONFIG)
    point_range = [-8, -8, -5, 8, 8, 3]
    cfg.model.data_preprocessor.voxel_layer.update(
        point_cloud_range=point_range, max_voxels=(2000, 2000))
    cfg.model.pts_voxel_encoder.update(point_cloud_range=point_range)
    cfg.model.pts_middle_encoder.update(output_shape=[64, 64])
    cfg.model.test_cfg.pts.update(nms_pre=50, max_num=20)  # cheap NMS
    detector = build(cfg.model)
    points = random_points(detector, 5, num_points=3000)
    return detector, inspect_detector(detector, points)


def test_zoo_pointpillars_is_almost_all_dpu(zoo_report):
    detector, report = zoo_report
    assert report.dpu_share >= 0.99
    assert set(report.subgraph_macs) == {'pillar_encoder', 'bev'}
    assert all(macs > 0 for macs in report.subgraph_macs.values())
    # Every layer of the detector is listed exactly once.
    leaves = {name for name, m in detector.named_modules()
              if name and next(m.children(), None) is None}
    module_rows = [layer.name for layer in report.layers if layer.name in
                   leaves]
    assert sorted(module_rows) == sorted(leaves)
    for layer in rows(report, op='Conv2d') + rows(report,
                                                  op='ConvTranspose2d'):
        assert layer.placement == DPU and layer.subgraph == 'bev'
    for layer in rows(report, op='Linear'):
        assert layer.placement == DPU
        assert layer.subgraph == 'pillar_encoder'
    scatter, = rows(report, name='pts_middle_encoder')
    assert (scatter.placement, scatter.reason) == (CPU, REASON_SCATTER)
    assert scatter.output_shape == '(1, 64, 64, 64)'
    voxelize, = rows(report, name='data_preprocessor.voxel_layer')
    assert voxelize.reason == REASON_VOXELIZATION
    decoration, = rows(report, op='point decoration')
    assert decoration.placement == CPU
    assert decoration.output_shape.endswith(', 64, 11)')  # 5 + 3 + 3
    nms, = rows(report, op='NMS')
    assert nms.reason == REASON_NMS and nms.placement == CPU
    assert rows(report, name='pts_bbox_head.loss_cls')[0].placement == UNUSED


def test_macs_follow_the_shapes(zoo_report):
    detector, report = zoo_report
    conv, = rows(report, name='pts_backbone.blocks.0.0')
    # 3x3 conv, 64 -> 64 channels, stride 2 on the 64 x 64 grid.
    assert conv.output_shape == '(1, 64, 32, 32)'
    assert conv.macs == 32 * 32 * 64 * 64 * 9
    deconv, = rows(report, name='pts_neck.deblocks.2.0')
    # The stride-4 deconv: 256 x 8 x 8 inputs, 4x4 kernel, 128 outputs.
    assert deconv.macs == 256 * 8 * 8 * 128 * 4 * 4
    linear, = rows(report, name='pts_voxel_encoder.pfn_layers.0.linear')
    voxels = int(linear.output_shape.strip('()').split(',')[0])
    assert linear.macs == voxels * 64 * 11 * 64
    assert report.total_macs == sum(layer.macs for layer in report.layers)
    json.dumps(report.to_dict())  # JSON-ready for reports


def test_format_table(zoo_report):
    _, report = zoo_report
    text = format_table(report)
    lines = text.splitlines()
    assert lines[0].split() == [
        'layer', 'op', 'output', 'shape', 'MACs', 'where', 'why'
    ]
    assert any('DPU:bev' in line for line in lines)
    assert any(REASON_SCATTER in line for line in lines)
    assert f'({100 * report.dpu_share:.2f}%)' in text


def test_second_sparse_convs_are_cpu():
    model_cfg, num_features = MODELS_UNDER_TEST['second']()
    detector = build(model_cfg)
    points = random_points(detector, num_features)
    report = inspect_detector(detector, points)
    sparse = [layer for layer in report.layers
              if layer.op in ('SubMConv3d', 'SparseConv3d')]
    # conv_input + 1 + 3 x 3 encoder layers + conv_out
    assert len(sparse) == 12
    for layer in sparse:
        assert (layer.placement, layer.reason) == (CPU, REASON_SPARSE_CONV)
        assert layer.macs > 0
        assert layer.output_shape.startswith('sparse (')
    # The first conv is a 3x3x3 submanifold conv, 4 -> 8 channels: its MACs
    # are the (site, neighbour site) pairs x Cin x Cout.
    voxels = detector.data_preprocessor.voxelize([points], None)
    sites = {tuple(c) for c in voxels['coors'][:, 1:].tolist()}
    pairs = sum((z + dz, y + dy, x + dx) in sites for z, y, x in sites
                for dz in (-1, 0, 1) for dy in (-1, 0, 1)
                for dx in (-1, 0, 1))
    assert sparse[0].macs == pairs * 4 * 8
    # A strided sparse conv counts the pairs it really multiplies, at most
    # every output site seeing the full kernel.
    strided = rows(report, op='SparseConv3d')[0]
    out_sites = int(strided.output_shape.split('(')[1].split(',')[0])
    assert 0 < strided.macs <= out_sites * 27 * 8 * 8
    norms = rows(report, name='middle_encoder.conv_input.1')
    assert norms[0].reason == REASON_SPARSE_FEATS
    densify, = rows(report, op='sparse to dense')
    assert densify.reason == REASON_DENSIFY
    assert densify.output_shape == '(1, 32, 8, 8)'
    assert 0 < report.dpu_share < 1
    assert set(report.subgraph_macs) == {'bev'}
    cpu_macs = sum(layer.macs for layer in report.cpu_layers())
    assert cpu_macs == sum(layer.macs for layer in sparse)


@pytest.mark.parametrize('slope, placement', [(0.2, CPU),
                                              (0.1015625, DPU)])
def test_leaky_relu_slope(slope, placement):
    model_cfg, num_features = MODELS_UNDER_TEST['hardvfe_fpn']()
    model_cfg.pts_neck.act_cfg = dict(type='LeakyReLU',
                                      negative_slope=slope)
    detector = build(model_cfg)
    report = inspect_detector(
        detector, random_points(detector, num_features, num_points=500))
    leaky = rows(report, op='LeakyReLU')
    assert len(leaky) == 6  # 3 lateral + 3 output convs of the FPN
    for layer in leaky:
        assert layer.placement == placement
        if placement == CPU:
            assert layer.reason == 'LeakyReLU slope 0.2 != 0.1015625'
    # The convolutions around them stay in the bev subgraph.
    assert all(layer.placement == DPU for layer in rows(report, op='Conv2d'))


def test_detector_mode_is_restored(zoo_report):
    detector, _ = zoo_report
    detector.train()
    detector.pts_backbone.blocks[0][1].eval()  # e.g. a frozen BN
    inspect_detector(detector, torch.zeros(10, 5))
    assert detector.training and detector.pts_neck.training
    assert not detector.pts_backbone.blocks[0][1].training
    detector.eval()
