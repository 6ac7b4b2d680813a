"""Tests of the synthetic nuScenes generator (embedded default data).

One small dataset (10 scenes x 3 keyframes, so both mini splits exist) is
generated per module and checked with the nuScenes devkit and, when
``mmcv.ops`` is importable, with the info pkls of mmdet3d's converter.
"""
import hashlib
import importlib
import importlib.util
import json
import os
import os.path as osp
import pickle

import cv2
import numpy as np
import pytest
from nuscenes import NuScenes
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import NuScenesEval
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box
from nuscenes.utils.splits import mini_train, mini_val
from pyquaternion import Quaternion

from mmdet3d_vitis.datasets import synthetic_nuscenes as syn


def _importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


HAS_MMCV_OPS = _importable('mmcv.ops')
needs_converter = pytest.mark.skipif(
    not HAS_MMCV_OPS, reason="mmcv.ops is not importable, so mmdet3d's "
    'converter cannot run')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FRAMES = 3
CATEGORY_TO_CLASS = {v: k for k, v in syn.CLASS_TO_CATEGORY.items()}


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic_nuscenes'))
    summary = syn.generate(root, scenes=10, frames=FRAMES, seed=0,
                           sweeps_per_sample=1, workers=2,
                           run_converter=HAS_MMCV_OPS)
    return root, summary


@pytest.fixture(scope='module')
def root(generated):
    return generated[0]


@pytest.fixture(scope='module')
def nusc(root):
    return NuScenes(version='v1.0-mini', dataroot=root, verbose=False)


def global_points(nusc, lidar_token):
    """Stored cloud in global coordinates, the devkit tutorial way."""
    sd = nusc.get('sample_data', lidar_token)
    cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    pose = nusc.get('ego_pose', sd['ego_pose_token'])
    pc = LidarPointCloud.from_file(nusc.get_sample_data_path(lidar_token))
    pc.rotate(Quaternion(cs['rotation']).rotation_matrix)
    pc.translate(np.array(cs['translation']))
    pc.rotate(Quaternion(pose['rotation']).rotation_matrix)
    pc.translate(np.array(pose['translation']))
    return pc.points[:3]


def test_devkit_loads_mini_splits(nusc, generated):
    names = sorted(s['name'] for s in nusc.scene)
    assert names == sorted(mini_train + mini_val)
    assert generated[1]['train_scenes'] == 8
    assert generated[1]['val_scenes'] == 2
    assert len(nusc.sample) == 10 * FRAMES
    for scene in nusc.scene:
        assert scene['nbr_samples'] == FRAMES
    sample = nusc.sample[1]
    assert sorted(sample['data']) == sorted(('LIDAR_TOP', ) + syn.CAMERAS)
    path, boxes, _ = nusc.get_sample_data(sample['data']['LIDAR_TOP'])
    assert osp.isfile(path) and len(boxes) == len(sample['anns'])
    _, _, intrinsic = nusc.get_sample_data(sample['data']['CAM_FRONT'])
    assert intrinsic.shape == (3, 3)


def test_ego_moves_and_timestamps_increase(nusc):
    for scene in nusc.scene:
        token, times, poses = scene['first_sample_token'], [], []
        while token:
            sample = nusc.get('sample', token)
            sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
            times.append(sample['timestamp'])
            poses.append(nusc.get('ego_pose', sd['ego_pose_token'])
                         ['translation'])
            token = sample['next']
        assert np.all(np.diff(times) == 500000)
        speed = np.linalg.norm(np.diff(poses, axis=0), axis=1) / 0.5
        assert np.all((speed > 2.9) & (speed < 10.1))


def test_num_lidar_pts_matches_devkit_count(nusc):
    counts = []
    for sample in nusc.sample:
        points = global_points(nusc, sample['data']['LIDAR_TOP'])
        for ann_token in sample['anns']:
            ann = nusc.get('sample_annotation', ann_token)
            count = int(points_in_box(nusc.get_box(ann_token), points).sum())
            assert count == ann['num_lidar_pts'], ann_token
            counts.append(count)
    assert np.mean(np.array(counts) > 0) > 0.5


def test_clutter_has_points_but_no_annotation(nusc):
    sample = nusc.sample[0]
    points = global_points(nusc, sample['data']['LIDAR_TOP'])
    above_ground = points[:, points[2] > 0.3]
    in_any_box = np.zeros(above_ground.shape[1], dtype=bool)
    for ann_token in sample['anns']:
        in_any_box |= points_in_box(nusc.get_box(ann_token), above_ground)
    # Facades, poles and planters return many unannotated points.
    assert (~in_any_box).sum() > 1000


def test_occlusion_lowers_visibility(nusc):
    levels = {ann['visibility_token'] for ann in nusc.sample_annotation
              if ann['num_lidar_pts'] > 0}
    assert '4' in levels
    assert levels & {'1', '2'}


def test_annotation_schema_and_tracks(nusc):
    classes = {CATEGORY_TO_CLASS[a['category_name']]
               for a in nusc.sample_annotation}
    assert classes == set(syn.CLASSES)
    valid_attrs = {
        'vehicle': {'vehicle.moving', 'vehicle.parked', 'vehicle.stopped'},
        'cycle': {'cycle.with_rider', 'cycle.without_rider'},
        'pedestrian': {'pedestrian.moving', 'pedestrian.standing'},
        'none': set()}
    moving_speeds, parked_speeds = [], []
    for ann in nusc.sample_annotation:
        cls = CATEGORY_TO_CLASS[ann['category_name']]
        group = ('vehicle' if cls in syn.VEHICLES else
                 'cycle' if cls in syn.CYCLES else
                 'pedestrian' if cls == 'pedestrian' else 'none')
        attrs = {nusc.get('attribute', t)['name']
                 for t in ann['attribute_tokens']}
        assert attrs <= valid_attrs[group] and len(attrs) == (
            group != 'none')
        if cls == 'car':  # size is [w, l, h]
            assert ann['size'][1] > 2 * ann['size'][0] > 3.0
        if ann['prev'] and ann['next']:
            speed = np.linalg.norm(nusc.box_velocity(ann['token'])[:2])
            if attrs & {'vehicle.moving', 'pedestrian.moving'}:
                moving_speeds.append(speed)
            elif attrs & {'vehicle.parked'}:
                parked_speeds.append(speed)
    assert min(moving_speeds) > 0.5 and max(parked_speeds) < 1e-6
    for inst in nusc.instance:
        ann = nusc.get('sample_annotation', inst['first_annotation_token'])
        n = 1
        while ann['next']:
            ann = nusc.get('sample_annotation', ann['next'])
            n += 1
        assert n == inst['nbr_annotations']
        assert ann['token'] == inst['last_annotation_token']


def test_lidar_files_and_sweep_chain(nusc):
    lidar = [sd for sd in nusc.sample_data if sd['channel'] == 'LIDAR_TOP']
    sweeps = [sd for sd in lidar if not sd['is_key_frame']]
    assert len(sweeps) == 10 * (FRAMES - 1)
    for sd in sweeps:
        assert sd['filename'].startswith('sweeps/LIDAR_TOP/')
        sample = nusc.get('sample', sd['sample_token'])
        # A sweep belongs to the next keyframe, like in nuScenes.
        assert sd['timestamp'] < sample['timestamp']
        assert nusc.get('sample_data', sd['next'])['timestamp'] > \
            sd['timestamp'] > nusc.get('sample_data', sd['prev'])['timestamp']
    cloud = np.fromfile(osp.join(nusc.dataroot, sweeps[0]['filename']),
                        dtype=np.float32).reshape(-1, 5)
    assert 20000 < len(cloud) < 34560
    ring = cloud[:, 4]
    assert ring.min() == 0 and ring.max() == 31
    assert np.all(ring == np.round(ring))
    assert np.ptp(cloud[:, 3]) > 50  # intensity differs by material


def test_images_and_masks(nusc):
    seen = set()
    for sample in nusc.sample[:FRAMES]:
        for cam in syn.CAMERAS:
            sd = nusc.get('sample_data', sample['data'][cam])
            assert (sd['width'], sd['height']) == (1600, 900)
            path = osp.join(nusc.dataroot, sd['filename'])
            with open(path, 'rb') as f:
                assert f.read(2) == b'\xff\xd8'  # JPEG
            assert cv2.imread(path).shape == (900, 1600, 3)
            stem = osp.splitext(osp.basename(sd['filename']))[0]
            mask = cv2.imread(osp.join(nusc.dataroot, 'seg_masks', cam,
                                       stem + '.png'), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (900, 1600) and mask.dtype == np.uint8
            assert mask.max() <= len(syn.CLASSES)
            seen |= set(np.unique(mask).tolist())
    assert {0, 1} <= seen and len(seen) >= 6


@needs_converter
def test_info_pkls_match_annotations(nusc, root):
    for split, scenes in (('train', mini_train), ('val', mini_val)):
        with open(osp.join(root, f'nuscenes_infos_{split}.pkl'), 'rb') as f:
            infos = pickle.load(f)
        assert infos['metainfo']['categories'] == {
            c: i for i, c in enumerate(syn.CLASSES)}
        assert len(infos['data_list']) == len(scenes) * FRAMES
        for info in infos['data_list']:
            sample = nusc.get('sample', info['token'])
            assert nusc.get('scene', sample['scene_token'])['name'] in scenes
            labels = [syn.CLASSES.index(CATEGORY_TO_CLASS[
                nusc.get('sample_annotation', t)['category_name']])
                for t in sample['anns']]
            assert [i['bbox_label_3d'] for i in info['instances']] == labels
            # The converter drops the key when there are no sweeps.
            assert len(info.get('lidar_sweeps', [])) == min(
                10, 2 * (nusc.sample.index(sample) % FRAMES))
    assert osp.isfile(osp.join(root, 'nuscenes_dbinfos_train.pkl'))


def test_devkit_detection_eval_on_mini_val(nusc, tmp_path):
    """Ground truth submitted as predictions scores (nearly) perfectly."""
    results = {}
    for sample in nusc.sample:
        scene = nusc.get('scene', sample['scene_token'])['name']
        if scene not in mini_val:
            continue
        results[sample['token']] = []
        for ann_token in sample['anns']:
            ann = nusc.get('sample_annotation', ann_token)
            if not ann['num_lidar_pts']:
                continue
            attrs = [nusc.get('attribute', t)['name']
                     for t in ann['attribute_tokens']]
            results[sample['token']].append({
                'sample_token': sample['token'],
                'translation': ann['translation'], 'size': ann['size'],
                'rotation': ann['rotation'],
                'velocity': list(nusc.box_velocity(ann_token)[:2]),
                'detection_name': CATEGORY_TO_CLASS[ann['category_name']],
                'detection_score': 1.0,
                'attribute_name': attrs[0] if attrs else ''})
    path = str(tmp_path / 'results.json')
    with open(path, 'w') as f:
        json.dump({'meta': {'use_lidar': True, 'use_camera': False,
                            'use_radar': False, 'use_map': False,
                            'use_external': False}, 'results': results}, f)
    evaluator = NuScenesEval(nusc, config_factory('detection_cvpr_2019'),
                             path, eval_set='mini_val',
                             output_dir=str(tmp_path), verbose=False)
    metrics, _ = evaluator.evaluate()
    assert metrics.mean_dist_aps['car'] > 0.99


def _digests(root, entries):
    """{relative path: md5} of all files under the given entries."""
    out = {}
    for entry in entries:
        base = osp.join(root, entry)
        paths = [base] if osp.isfile(base) else [
            osp.join(d, f) for d, _, fs in os.walk(base) for f in fs]
        for path in paths:
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.md5(
                    f.read()).hexdigest()
    return out


def _cli_main():
    spec = importlib.util.spec_from_file_location(
        'create_synthetic_nuscenes',
        osp.join(REPO, 'tools', 'create_synthetic_nuscenes.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_deterministic_for_a_seed(tmp_path):
    main = _cli_main()
    entries = ['v1.0-mini', 'samples', 'sweeps', 'seg_masks']
    if HAS_MMCV_OPS:
        entries += ['nuscenes_infos_train.pkl', 'nuscenes_infos_val.pkl',
                    'nuscenes_dbinfos_train.pkl', 'nuscenes_gt_database']
    runs = {}
    for name, seed, workers in (('a', 0, 1), ('b', 0, 2), ('c', 1, 2)):
        out = str(tmp_path / name)
        args = ['--out', out, '--scenes', '2', '--frames', '2', '--seed',
                str(seed), '--workers', str(workers)]
        if not HAS_MMCV_OPS or name == 'c':
            args.append('--no-converter')
        main(args)
        runs[name] = _digests(out, entries)
    assert runs['a'] == runs['b']  # independent of the worker count
    lidar = {r: {d for p, d in runs[r].items() if p.endswith('.pcd.bin')}
             for r in 'ac'}
    assert len(lidar['a']) == 2 * 3 and not lidar['a'] & lidar['c']
    for table in ('scene', 'sample_data', 'sample_annotation', 'ego_pose'):
        path = f'v1.0-mini/{table}.json'
        assert runs['a'][path] != runs['c'][path]
