"""Deterministic synthetic nuScenes-format dataset (the project's embedded
default data).

``generate()`` writes a small driving dataset in the nuScenes ``v1.0-mini``
layout, so that the nuScenes devkit, mmdet3d's own nuScenes converter and
``NuScenesMetric`` (``mini_val`` split) work on it unchanged::

    OUT/v1.0-mini/*.json             devkit tables
    OUT/maps/<token>.png             placeholder map masks
    OUT/samples/LIDAR_TOP/*.pcd.bin  keyframe sweeps, float32 (x, y, z,
                                     intensity, ring 0..31) per point
    OUT/sweeps/LIDAR_TOP/*.pcd.bin   non-keyframe sweeps
    OUT/samples/CAM_*/*.jpg          1600x900 camera images
    OUT/seg_masks/CAM_*/*.png        per-pixel class index (0 = none,
                                     1..10 = CLASSES index + 1)
    OUT/nuscenes_infos_{train,val}.pkl, OUT/nuscenes_dbinfos_train.pkl,
    OUT/nuscenes_gt_database/        written by mmdet3d's converter

The world of every scene is a straight/curved boulevard on a flat ground plane
(z = 0 in global coordinates): four traffic lanes, bike lanes, parking strips
and sidewalks, lined with building facades, poles and planters (clutter that is
never annotated).  Objects of the ten detection classes are parked, drive in
lanes or walk on the sidewalks with constant speed along the road, so they form
tracks over the scene.  The ego car drives in the right inner lane at 3-10 m/s.

Sensors use the real nuScenes rig (LIDAR_TOP and the six cameras, calibration
copied from a real nuScenes log).  The lidar is a 32-beam spinning scanner
(HDL-32E elevations) ray-cast against the ground and every box; the nearest hit
wins, so objects occlude each other.  Cameras are rendered with a painter's
algorithm.  All randomness comes from ``numpy.random.default_rng`` seeded with
``(seed, scene index[, sweep index])``, so outputs are byte-identical for the
same arguments regardless of the number of workers.
"""
import functools
import hashlib
import json
import math
import multiprocessing
import os
import os.path as osp
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import cv2
import numpy as np
from nuscenes.utils.data_classes import Box, LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box
from nuscenes.utils.splits import mini_train, mini_val
from pyquaternion import Quaternion

VERSION = 'v1.0-mini'

# mmdet3d's nuScenes class order; mask value = index + 1.
CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
           'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone', 'barrier')
CLASS_TO_CATEGORY = {
    'car': 'vehicle.car',
    'truck': 'vehicle.truck',
    'trailer': 'vehicle.trailer',
    'bus': 'vehicle.bus.rigid',
    'construction_vehicle': 'vehicle.construction',
    'bicycle': 'vehicle.bicycle',
    'motorcycle': 'vehicle.motorcycle',
    'pedestrian': 'human.pedestrian.adult',
    'traffic_cone': 'movable_object.trafficcone',
    'barrier': 'movable_object.barrier',
}
# The real nuScenes category table (descriptions shortened).
CATEGORIES = (
    ('human.pedestrian.adult', 'Adult subcategory.'),
    ('human.pedestrian.child', 'Child subcategory.'),
    ('human.pedestrian.wheelchair', 'Wheelchairs.'),
    ('human.pedestrian.stroller', 'Strollers.'),
    ('human.pedestrian.personal_mobility', 'Personal mobility devices.'),
    ('human.pedestrian.police_officer', 'Police officer.'),
    ('human.pedestrian.construction_worker', 'Construction worker.'),
    ('animal', 'All animals.'),
    ('vehicle.car', 'Vehicle designed primarily for personal use.'),
    ('vehicle.motorcycle', 'Gasoline or electric powered 2-wheeled vehicle.'),
    ('vehicle.bicycle', 'Human or electric powered 2-wheeled vehicle.'),
    ('vehicle.bus.bendy', 'Bendy bus subcategory.'),
    ('vehicle.bus.rigid', 'Rigid bus subcategory.'),
    ('vehicle.truck', 'Vehicles primarily designed to haul cargo.'),
    ('vehicle.construction', 'Vehicles designed for construction.'),
    ('vehicle.emergency.ambulance', 'All types of ambulances.'),
    ('vehicle.emergency.police', 'All types of police vehicles.'),
    ('vehicle.trailer', 'Any vehicle trailer.'),
    ('movable_object.barrier', 'Temporary road barrier.'),
    ('movable_object.trafficcone', 'All types of traffic cone.'),
    ('movable_object.pushable_pullable', 'Objects pedestrians may push.'),
    ('movable_object.debris', 'Debris or movable object on the road.'),
    ('static_object.bicycle_rack', 'Area or device intended to park bikes.'),
)
ATTRIBUTES = (
    ('vehicle.moving', 'Vehicle is moving.'),
    ('vehicle.stopped', 'Vehicle, with a driver/rider in/on it, is stopped.'),
    ('vehicle.parked', 'Vehicle is stationary and has no driver/rider.'),
    ('cycle.with_rider', 'There is a rider on the bicycle or motorcycle.'),
    ('cycle.without_rider', 'There is NO rider on the bicycle or motorcycle.'),
    ('pedestrian.sitting_lying_down', 'The human is sitting or lying down.'),
    ('pedestrian.standing', 'The human is standing.'),
    ('pedestrian.moving', 'The human is moving.'),
)
# (token, level); a box's visibility is the fraction of the lidar rays through
# it that are not blocked by something nearer.
VISIBILITIES = (('1', 'v0-40', 0.4), ('2', 'v40-60', 0.6),
                ('3', 'v60-80', 0.8), ('4', 'v80-100', 1.0))

# Mean (length, width, height) of the nuScenes classes as used by mmdet3d.
MEAN_LWH = {
    'car': (4.607, 1.950, 1.723),
    'truck': (6.738, 2.456, 2.730),
    'trailer': (12.013, 2.874, 3.815),
    'bus': (11.189, 2.940, 3.470),
    'construction_vehicle': (6.384, 2.731, 3.133),
    'bicycle': (1.685, 0.601, 1.272),
    'motorcycle': (2.100, 0.763, 1.444),
    'pedestrian': (0.726, 0.663, 1.757),
    'traffic_cone': (0.404, 0.397, 1.062),
    'barrier': (0.486, 2.490, 0.983),
}
VEHICLES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle')
CYCLES = ('bicycle', 'motorcycle')

# Real nuScenes rig (log n015-2018-07-24-11-22-45+0800); quaternions (w, x,
# y, z) map sensor to ego coordinates.
LIDAR_CALIB = {
    'translation': [0.943713, 0.0, 1.84023],
    'rotation': [0.7077955119163518, -0.006492242056004365,
                 0.010646214713995808, -0.7063073142877817],
}
CAMERA_CALIB = {
    'CAM_FRONT': ([1.70079124, 0.01594563, 1.5109576],
                  [0.4998015431, -0.5030316163, 0.4997798114, -0.4973708382],
                  (1266.417203046554, 816.2670197447984, 491.50706579294757)),
    'CAM_FRONT_RIGHT': ([1.55084777, -0.49340481, 1.49574804],
                        [0.2060347929, -0.202694054, 0.6824507837,
                         -0.6713610894],
                        (1260.8474446004698, 807.968244525554,
                         495.3344268742088)),
    'CAM_FRONT_LEFT': ([1.52387798, 0.49463135, 1.50932825],
                       [0.675726504, -0.6736266528, 0.2121401486,
                        -0.2112282692],
                       (1272.5979470598488, 826.6154927353808,
                        479.75165386361925)),
    'CAM_BACK': ([0.02832603, 0.00345137, 1.57910347],
                 [0.5037872666, -0.497402498, -0.4941850225, 0.5045496097],
                 (809.2209905677063, 829.2196003259838, 481.77842384512485)),
    'CAM_BACK_LEFT': ([1.03569102, 0.48479503, 1.59097016],
                      [0.6924185586, -0.7031619418, -0.1164834303,
                       0.1120331814],
                      (1256.7414812095406, 792.1125740759628,
                       492.7757465151356)),
    'CAM_BACK_RIGHT': ([1.01487815, -0.48056823, 1.56239545],
                       [0.1228098002, -0.1324008418, -0.7004305823,
                        0.6904960314],
                       (1259.5137405846733, 807.2529053838625,
                        501.19579884916527)),
}
CAMERAS = tuple(CAMERA_CALIB)
IMG_W, IMG_H = 1600, 900

# Mini-split scene names, interleaved so that any prefix of two or more
# scenes contains a validation scene; 10 scenes = 8 train + 2 val.
SCENE_NAMES = (mini_train[0], mini_val[0], *mini_train[1:], mini_val[1])
SCENE_LOCATIONS = {
    'scene-0061': 'singapore-onenorth',
    'scene-0103': 'boston-seaport',
    'scene-0553': 'boston-seaport',
    'scene-0655': 'boston-seaport',
    'scene-0757': 'boston-seaport',
    'scene-0796': 'singapore-queenstown',
    'scene-0916': 'singapore-queenstown',
    'scene-1077': 'singapore-hollandvillage',
    'scene-1094': 'singapore-hollandvillage',
    'scene-1100': 'singapore-hollandvillage',
}

KEYFRAME_US = 500000  # keyframes at 2 Hz
FIRST_TIMESTAMP_US = 1532402927647951
DEFAULT_SWEEPS_PER_SAMPLE = 1

# Road cross-section, metres of lateral offset d (positive = left of the
# driving direction of increasing arc length s).  The right side carries
# traffic in +s, the left side in -s.
LANE_IN, LANE_OUT = 1.625, 4.875
LANE_EDGE = 6.5
BIKE_LANE = 7.1
PARK_INNER, PARK_OUTER = 7.7, 10.9  # parked vehicles hug the outer curb
FURNITURE_ROW = 11.35  # poles, planters, parked cycles
WORK_ZONE_ROW = 8.3  # cones and barriers at the lane side of the parking
PED_TRACKS = (12.15, 12.95, 13.75)
PED_STAND_ROW = 14.75
FACADE = 15.4
EGO_LANE = -LANE_IN

ANNOTATION_RANGE = 60.0  # objects farther from the ego are not annotated
SIM_RANGE = 130.0  # objects farther away are ignored by all sensors
STATIC_MARGIN = 140.0  # static world extends this far around the ego path

# 32-beam spinning lidar (Velodyne HDL-32E).
LIDAR_ELEVATIONS = np.deg2rad(np.linspace(-30.67, 10.67, 32))
LIDAR_AZIMUTHS = 1080
LIDAR_MAX_RANGE = 80.0
LIDAR_RANGE_SIGMA = 0.02
LIDAR_DROPOUT = 0.06
GROUND_INTENSITY = 9.0
# Annotation boxes are this much larger than the ray-cast/rendered object on
# every side (and on top) so that range noise keeps surface points inside.
BOX_MARGIN = 0.03

# Actor kinds: the classes, then clutter that is never annotated.
KINDS = CLASSES + ('pole', 'planter', 'building')

# Per-kind rendering style: base colour (BGR) and horizontal bands as
# (start, end, colour) in fractions of the height; None = base colour.
_DARK = (35, 35, 38)
STYLES = {
    'car': ((45, 45, 190), ((0.0, 0.2, _DARK), (0.2, 0.55, None),
                            (0.55, 0.9, (95, 70, 50)), (0.9, 1.0, None))),
    'truck': ((20, 200, 235), ((0.0, 0.15, _DARK), (0.15, 0.62, None),
                               (0.62, 0.75, (10, 140, 170)),
                               (0.75, 1.0, None))),
    'trailer': ((215, 215, 220), ((0.0, 0.28, _DARK), (0.28, 0.45, None),
                                  (0.45, 0.55, (170, 90, 30)),
                                  (0.55, 1.0, None))),
    'bus': ((60, 165, 40), ((0.0, 0.12, _DARK), (0.12, 0.45, None),
                            (0.45, 0.85, (80, 70, 25)), (0.85, 1.0, None))),
    'construction_vehicle': ((0, 130, 255),
                             ((0.0, 0.2, _DARK), (0.2, 0.5, None),
                              (0.5, 0.6, (20, 20, 20)), (0.6, 1.0, None))),
    'bicycle': ((210, 200, 0), ((0.0, 1.0, None), )),
    'motorcycle': ((190, 40, 180), ((0.0, 0.3, (70, 60, 70)),
                                    (0.3, 1.0, None))),
    'pedestrian': ((215, 120, 40), ((0.0, 0.45, (100, 45, 25)),
                                    (0.45, 0.87, None),
                                    (0.87, 1.0, (140, 170, 215)))),
    'traffic_cone': ((0, 100, 255), ((0.0, 0.1, _DARK), (0.1, 0.45, None),
                                     (0.45, 0.6, (240, 240, 240)),
                                     (0.6, 1.0, None))),
    'barrier': ((50, 50, 220), ((0.0, 0.5, None),
                                (0.5, 1.0, (235, 235, 235)))),
    'pole': ((125, 125, 130), ((0.0, 1.0, None), )),
    'planter': ((45, 115, 55), ((0.0, 0.35, (110, 120, 125)),
                                (0.35, 1.0, None))),
}
RIDER_BANDS = ((0.0, 0.5, None), (0.5, 1.0, (110, 60, 20)))
WINDOW = (85, 70, 60)
SKY_TOP, SKY_HORIZON = (210, 150, 90), (240, 225, 205)
FAR_GROUND = (95, 105, 100)
# Lidar intensity per kind (nuScenes intensities are 0..255).
INTENSITIES = {
    'car': 28.0, 'truck': 34.0, 'trailer': 45.0, 'bus': 38.0,
    'construction_vehicle': 50.0, 'bicycle': 20.0, 'motorcycle': 24.0,
    'pedestrian': 12.0, 'traffic_cone': 95.0, 'barrier': 70.0,
    'pole': 60.0, 'planter': 6.0, 'building': 32.0,
}
SUN = np.array([0.35, 0.3, 0.887])
PIECE = 4.0  # max edge of a rendered quad, keeps painter's sort correct
NEAR = 0.1
RENDER_RANGE = 120.0


def token(seed, *parts):
    """32-hex token derived from the seed and a record's name."""
    key = '/'.join(str(p) for p in (seed, *parts))
    return hashlib.md5(key.encode()).hexdigest()


def yaw_quaternion(yaw):
    """(w, x, y, z) of a rotation about +z."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def rot_z(yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1),
                     np.stack([zero, zero, one], -1)], -2)


# --------------------------------------------------------------------------
# World: road, ego trajectory and actors
# --------------------------------------------------------------------------
class Road:
    """Road centreline sampled every 0.5 m of arc length s.

    Curvature is piecewise constant (straight segments and arcs of 80-300 m
    radius); the heading stays within 60 deg of the initial one so the road
    never curls back onto itself.
    """

    STEP = 0.5

    def __init__(self, rng, s_lo, s_hi, origin):
        s = np.arange(s_lo, s_hi + self.STEP, self.STEP)
        kappa = np.zeros_like(s)
        pos, turned = s_lo, 0.0
        while pos < s_hi:
            length = rng.uniform(40.0, 120.0)
            if rng.random() < 0.5:
                k = rng.choice((-1.0, 1.0)) / rng.uniform(80.0, 300.0)
                if abs(turned + k * length) > math.radians(60):
                    k = -k
                if abs(turned + k * length) > math.radians(60):
                    k = 0.0
                kappa[(s >= pos) & (s < pos + length)] = k
                turned += k * length
            pos += length
        heading = rng.uniform(-math.pi, math.pi) + np.concatenate(
            [[0.0], np.cumsum(kappa[:-1] * self.STEP)])
        x = np.concatenate([[0.0], np.cumsum(np.cos(heading[:-1]))])
        y = np.concatenate([[0.0], np.cumsum(np.sin(heading[:-1]))])
        zero = np.searchsorted(s, 0.0)
        self.s = s
        self.x = (x - x[zero]) * self.STEP + origin[0]
        self.y = (y - y[zero]) * self.STEP + origin[1]
        self.heading = heading

    def frame(self, s, d):
        """Global (x, y, heading) at arc length s and lateral offset d."""
        h = np.interp(s, self.s, self.heading)
        x = np.interp(s, self.s, self.x) - d * np.sin(h)
        y = np.interp(s, self.s, self.y) + d * np.cos(h)
        return x, y, h


class EgoMotion:
    """Ego arc length s(t): mean speed plus a slow sinusoidal speed change,
    keeping the speed within 3-10 m/s."""

    def __init__(self, rng):
        self.v0 = rng.uniform(4.5, 8.5)
        self.amp = rng.uniform(0.0, min(1.5, self.v0 - 3.0, 10.0 - self.v0))
        self.omega = 2 * math.pi / rng.uniform(8.0, 20.0)
        self.phase = rng.uniform(0, 2 * math.pi)

    def s(self, t):
        return self.v0 * t - self.amp / self.omega * (
            np.cos(self.omega * t + self.phase) - math.cos(self.phase))


class ActorBuilder:
    """Collects actors, i.e. every box of a scene (objects and clutter).

    An actor moves along the road at a constant arc-length speed ``v`` (or
    with the ego when ``follows_ego``) at a fixed lateral offset ``d``; its
    yaw is the road heading plus ``yaw_off``.
    """

    def __init__(self, rng):
        self.rng = rng
        self.rows = []

    def size(self, name, h_scale=1.0):
        jitter = 0.03 if name in ('traffic_cone', 'barrier') else 0.07
        lwh = np.array(MEAN_LWH[name]) * self.rng.uniform(
            1 - jitter, 1 + jitter, 3)
        lwh[2] *= h_scale
        return lwh

    def add(self, kind, s, d, lwh=None, v=0.0, yaw_off=0.0, attr='',
            follows_ego=False):
        """Add an actor of ``kind``; class sizes default to jittered means."""
        lwh = self.size(kind) if lwh is None else lwh
        self.rows.append((KINDS.index(kind), lwh, s, d, v, yaw_off, attr,
                          follows_ego))
        return lwh


def _choose(rng, mix):
    """Name drawn from ``((name, weight), ...)``."""
    names, weights = zip(*mix)
    return names[rng.choice(len(names), p=np.array(weights) / sum(weights))]


LANE_MIX = (('car', 0.8), ('truck', 0.07), ('bus', 0.05),
            ('construction_vehicle', 0.02), ('truck+trailer', 0.06))
BIKE_MIX = (('bicycle', 0.55), ('motorcycle', 0.45))
PARKING_MIX = (('gap', 0.40), ('car', 0.36), ('truck', 0.05),
               ('trailer', 0.035), ('bus', 0.025), ('construction', 0.035),
               ('barriers', 0.035), ('cones', 0.03))
FURNITURE_MIX = (('pole', 0.3), ('planter', 0.2), ('bicycle', 0.025),
                 ('motorcycle', 0.015), ('barrier', 0.015),
                 ('traffic_cone', 0.02))


def _place_lane(b, s_lo, s_hi, d, v, mix, gap):
    """Fill a traffic or bike lane with movers sharing the lane speed ``v``.

    One speed per lane keeps the gaps constant, so movers never collide.
    Traffic drives in +s on the right (d < 0) and in -s on the left.
    """
    rng = b.rng
    direction = 1.0 if d < 0 else -1.0
    yaw_off = 0.0 if direction > 0 else math.pi
    s = s_lo + rng.uniform(0.0, gap[1])
    while s < s_hi:
        name = _choose(rng, mix)
        if name in CYCLES:  # moving cycles have riders, inside their box
            parts = [(name, b.size(name, h_scale=1.3))]
            attr = 'cycle.with_rider'
        else:
            split = name.split('+')  # 'truck+trailer' is a combination
            parts = [(n, b.size(n)) for n in split]
            attr = 'vehicle.moving' if v else 'vehicle.stopped'
        total = sum(lwh[0] for _, lwh in parts) + 0.8 * (len(parts) - 1)
        # Lay the parts out front to back inside [s, s + total].
        front = s + total if direction > 0 else s
        for name, lwh in parts:
            b.add(name, front - direction * lwh[0] / 2, d, lwh, v, yaw_off,
                  attr)
            front -= direction * (lwh[0] + 0.8)
        s += total + rng.uniform(*gap)


def _place_parking(b, s_lo, s_hi, side):
    """Parked vehicles and construction zones along one parking strip."""
    rng = b.rng
    yaw_off = 0.0 if side < 0 else math.pi  # parked along the traffic flow
    s = s_lo
    while s < s_hi:
        item = _choose(rng, PARKING_MIX)
        if item == 'gap':
            s += rng.uniform(6.0, 25.0)
            continue
        if item == 'barriers':
            # Barriers stand across their heading: w is the long side.
            for _ in range(rng.integers(2, 6)):
                lwh = b.size('barrier')
                b.add('barrier', s + lwh[1] / 2, side * WORK_ZONE_ROW, lwh,
                      yaw_off=math.pi / 2)
                s += lwh[1] + 0.25
        elif item == 'cones':
            for _ in range(rng.integers(3, 8)):
                b.add('traffic_cone', s + 0.2, side * WORK_ZONE_ROW)
                s += rng.uniform(1.5, 3.0)
        elif item == 'construction':
            lwh = b.size('construction_vehicle')
            b.add('traffic_cone', s + 0.2, side * WORK_ZONE_ROW)
            b.add('construction_vehicle', s + 1.8 + lwh[0] / 2,
                  side * (PARK_OUTER - 0.2 - lwh[1] / 2), lwh,
                  yaw_off=yaw_off, attr='vehicle.parked')
            b.add('traffic_cone', s + 3.4 + lwh[0], side * WORK_ZONE_ROW)
            s += 3.6 + lwh[0]
        else:
            lwh = b.size(item)
            attr = 'vehicle.stopped' if item == 'bus' else 'vehicle.parked'
            b.add(item, s + lwh[0] / 2, side * (PARK_OUTER - 0.2 - lwh[1] / 2),
                  lwh, yaw_off=yaw_off, attr=attr)
            s += lwh[0]
        s += rng.uniform(0.8, 3.0)


def _place_sidewalk(b, s_lo, s_hi, side, duration):
    """Street furniture, walking and standing pedestrians on one sidewalk."""
    rng = b.rng
    s = s_lo
    while s < s_hi:
        s += rng.uniform(3.0, 14.0)
        item = _choose(rng, FURNITURE_MIX)
        d = side * FURNITURE_ROW
        if item == 'pole':
            b.add(item, s, d, np.array([0.25, 0.25, rng.uniform(5.0, 8.0)]))
        elif item == 'planter':
            b.add(item, s, d, np.array([rng.uniform(1.0, 2.0), 0.8,
                                        rng.uniform(0.6, 1.2)]))
        elif item in CYCLES:
            b.add(item, s, d, yaw_off=rng.choice((0.0, math.pi)),
                  attr='cycle.without_rider')
        else:
            b.add(item, s, d, yaw_off=math.pi / 2 * (item == 'barrier'))
    for track in PED_TRACKS:
        v = rng.choice((-1.0, 1.0)) * rng.uniform(0.8, 1.6)
        # Also spawn walkers that enter the window during the scene.
        s = s_lo - max(0.0, v * duration)
        while s < s_hi - min(0.0, v * duration):
            s += rng.uniform(50.0, 250.0)
            b.add('pedestrian', s, side * track, v=v,
                  yaw_off=0.0 if v > 0 else math.pi, attr='pedestrian.moving')
    s = s_lo
    while s < s_hi:
        s += rng.uniform(40.0, 160.0)
        b.add('pedestrian', s, side * PED_STAND_ROW,
              yaw_off=rng.uniform(-math.pi, math.pi),
              attr='pedestrian.standing')


def _place_buildings(b, s_lo, s_hi, side):
    rng = b.rng
    s = s_lo
    while s < s_hi:
        length, depth = rng.uniform(10.0, 26.0), rng.uniform(8.0, 15.0)
        b.add('building', s + length / 2, side * (FACADE + depth / 2),
              np.array([length, depth, rng.uniform(5.0, 22.0)]))
        s += length + (rng.uniform(2.0, 7.0) if rng.random() < 0.4 else 0.1)


def _mover_window(ego, times, v):
    """Range of start positions s0 of speed-v movers that pass near the ego."""
    rel = ego.s(times) - v * times
    return rel.min() - SIM_RANGE, rel.max() + SIM_RANGE


def build_world(rng, frames):
    """Road, ego motion and all actors of one scene."""
    duration = (frames - 1) * KEYFRAME_US / 1e6
    times = np.linspace(0.0, duration, max(2, frames))
    ego = EgoMotion(rng)
    s_end = float(ego.s(duration))
    margin = STATIC_MARGIN + SIM_RANGE + 15.0 * duration
    road = Road(rng, -margin, s_end + margin, rng.uniform(300.0, 1800.0, 2))
    b = ActorBuilder(rng)
    s_lo, s_hi = -STATIC_MARGIN, s_end + STATIC_MARGIN
    for side in (-1.0, 1.0):
        _place_buildings(b, s_lo, s_hi, side)
        _place_parking(b, s_lo, s_hi, side)
        _place_sidewalk(b, s_lo, s_hi, side, duration)
    # A lead vehicle (and often a follower) drive with the ego.
    b.add(_choose(rng, LANE_MIX[:3]), rng.uniform(12.0, 25.0), EGO_LANE,
          attr='vehicle.moving', follows_ego=True)
    if rng.random() < 0.6:
        b.add('car', -rng.uniform(10.0, 20.0), EGO_LANE,
              attr='vehicle.moving', follows_ego=True)
    lanes = ((-LANE_OUT, 0.0 if rng.random() < 0.25 else rng.uniform(4, 12)),
             (LANE_IN, -rng.uniform(5.0, 12.0)),
             (LANE_OUT, 0.0 if rng.random() < 0.15 else -rng.uniform(5, 12)))
    for d, v in lanes:
        _place_lane(b, *_mover_window(ego, times, v), d, v, LANE_MIX,
                    (10.0, 70.0))
    for side in (-1.0, 1.0):
        v = -side * rng.uniform(2.5, 6.0)
        _place_lane(b, *_mover_window(ego, times, v), side * BIKE_LANE, v,
                    BIKE_MIX, (40.0, 200.0))
    return World(rng, road, ego, b.rows)


class World:
    """Actor arrays and appearance of one scene; ``state(t)`` gives poses."""

    def __init__(self, rng, road, ego, rows):
        self.road, self.ego = road, ego
        kind, lwh, s0, d, v, yaw_off, attr, follows_ego = zip(*rows)
        self.kind = np.array(kind)
        self.lwh = np.array(lwh, dtype=np.float64)
        self.s0 = np.array(s0, dtype=np.float64)
        self.d = np.array(d, dtype=np.float64)
        self.v = np.array(v, dtype=np.float64)
        self.yaw_off = np.array(yaw_off, dtype=np.float64)
        self.attr = attr
        self.follows_ego = np.array(follows_ego)
        self.annotated = self.kind < len(CLASSES)
        # Ray-cast/rendered geometry is slightly smaller than the annotation.
        margin = np.where(self.annotated, BOX_MARGIN, 0.0)[:, None]
        self.geo_lwh = self.lwh - margin * np.array([2.0, 2.0, 1.0])
        names = [KINDS[k] for k in self.kind]
        self.intensity = np.array([INTENSITIES[n] for n in names]) * \
            rng.uniform(0.8, 1.2, len(names))
        brightness = rng.uniform(0.8, 1.15, len(names))
        self.quads = RenderQuads(self, names, brightness, rng)

    def state(self, t):
        """Global box centres (n, 3) and yaws (n,) at scene time t."""
        s = self.s0 + np.where(self.follows_ego, self.ego.s(t), self.v * t)
        x, y, h = self.road.frame(s, self.d)
        return np.stack([x, y, self.lwh[:, 2] / 2], 1), h + self.yaw_off

    def ego_pose(self, t):
        """(translation, rotation quaternion) of the ego at time t."""
        x, y, h = self.road.frame(self.ego.s(t), EGO_LANE)
        return [float(x), float(y), 0.0], yaw_quaternion(float(h))


# --------------------------------------------------------------------------
# LiDAR
# --------------------------------------------------------------------------
def _lidar_dirs():
    """Unit ray directions in the LIDAR_TOP frame, shape (32, azimuths, 3)."""
    az = np.arange(LIDAR_AZIMUTHS) * (2 * np.pi / LIDAR_AZIMUTHS)
    el = LIDAR_ELEVATIONS[:, None]
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                     np.sin(el) * np.ones_like(az)], -1)


LIDAR_DIRS = _lidar_dirs()
_UNIT_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1)
                          for z in (-1, 1)], dtype=np.float64)


def _ray_window(corners, centre, radius, inside):
    """Ring slice and azimuth columns of the rays that can hit a box.

    ``corners`` are the box corners in the lidar frame.  A convex box's
    azimuth span is spanned by its corners; elevations are bounded with the
    range of horizontal distances instead, because the top edge of a long box
    rises above the elevation of its corners.
    """
    step = 2 * np.pi / LIDAR_AZIMUTHS
    if inside:  # the sensor is above/below the box footprint
        cols = np.arange(LIDAR_AZIMUTHS)
    else:
        az0 = math.atan2(centre[1], centre[0])
        rel = np.arctan2(corners[:, 1], corners[:, 0]) - az0
        rel = (rel + np.pi) % (2 * np.pi) - np.pi
        cols = np.arange(math.floor((az0 + rel.min()) / step),
                         math.ceil((az0 + rel.max()) / step) + 1)
        cols %= LIDAR_AZIMUTHS
    dist = math.hypot(centre[0], centre[1])
    dmin, dmax = max(dist - radius, 0.05), dist + radius
    zlo, zhi = corners[:, 2].min(), corners[:, 2].max()
    el_lo = math.atan2(zlo, dmin if zlo < 0 else dmax)
    el_hi = math.atan2(zhi, dmin if zhi > 0 else dmax)
    return slice(np.searchsorted(LIDAR_ELEVATIONS, el_lo - 1e-3),
                 np.searchsorted(LIDAR_ELEVATIONS, el_hi + 1e-3)), cols


def cast_lidar(origin, rot_gl, centres, yaws, half):
    """Ray-cast one sweep against the ground plane z=0 and boxes.

    ``origin``/``rot_gl``: lidar position and lidar->global rotation; boxes
    are given by global centres, yaws and half sizes.  Returns the nearest
    hit distance per ray (inf = no return), the index of the box hit (-1 =
    ground or nothing) and, per box, the number of rays crossing it and the
    number for which it is the nearest hit (its unoccluded rays).
    """
    dz = LIDAR_DIRS @ rot_gl[2]
    with np.errstate(divide='ignore'):
        depth = np.where(dz < -1e-6, -origin[2] / dz, np.inf)
    owner = np.full(depth.shape, -1, dtype=np.int64)
    crossed = np.zeros(len(centres), dtype=np.int64)
    rot_lb = rot_gl.T @ rot_z(yaws)  # box -> lidar rotation
    centre_l = (centres - origin) @ rot_gl
    for i in range(len(centres)):
        r_lb, c_l, hb = rot_lb[i], centre_l[i], half[i]
        o_b = -c_l @ r_lb  # sensor position in the box frame
        inside = abs(o_b[0]) <= hb[0] and abs(o_b[1]) <= hb[1]
        corners = (_UNIT_CORNERS * hb) @ r_lb.T + c_l
        rings, cols = _ray_window(corners, c_l, math.hypot(hb[0], hb[1]),
                                  inside)
        if rings.start >= rings.stop:
            continue
        # Slab test in the box frame.
        d_b = LIDAR_DIRS[rings][:, cols] @ r_lb
        with np.errstate(divide='ignore', invalid='ignore'):
            inv = 1.0 / d_b
            t1 = (-hb - o_b) * inv
            t2 = (hb - o_b) * inv
            t_near = np.minimum(t1, t2).max(-1)
            t_far = np.maximum(t1, t2).min(-1)
        hit = (t_near <= t_far) & (t_near > 0)
        crossed[i] = hit.sum()
        if crossed[i]:
            current = depth[rings, cols]
            closer = hit & (t_near < current)
            depth[rings, cols] = np.where(closer, t_near, current)
            owner[rings, cols] = np.where(closer, i, owner[rings, cols])
    visible = np.bincount(owner[owner >= 0], minlength=len(centres))
    return depth, owner, crossed, visible


def lidar_points(depth, owner, intensity, rng):
    """Noisy (x, y, z, intensity, ring) float32 points, in spinning order
    (all rings of one azimuth, then the next azimuth)."""
    noise = rng.normal(0.0, LIDAR_RANGE_SIGMA, depth.shape)
    keep = (depth < LIDAR_MAX_RANGE) & (
        rng.random(depth.shape) >= LIDAR_DROPOUT)
    inten = np.where(owner >= 0, intensity[owner], GROUND_INTENSITY)
    inten = np.clip(inten + rng.normal(0.0, 2.5, depth.shape), 0.0, 255.0)
    xyz = LIDAR_DIRS * np.where(keep, depth + noise, 0.0)[..., None]
    ring = np.broadcast_to(
        np.arange(len(LIDAR_ELEVATIONS), dtype=np.float64)[:, None],
        depth.shape)
    cloud = np.concatenate([xyz, inten[..., None], ring[..., None]], -1)
    return cloud.transpose(1, 0, 2)[keep.T].astype(np.float32)


def count_box_points(lidar_path, calib, pose, anns):
    """num_lidar_pts of annotations exactly as the devkit gets them from the
    stored cloud (sensor -> ego -> global, then ``points_in_box``)."""
    pc = LidarPointCloud.from_file(lidar_path)
    pc.rotate(Quaternion(calib['rotation']).rotation_matrix)
    pc.translate(np.array(calib['translation']))
    pc.rotate(Quaternion(pose['rotation']).rotation_matrix)
    pc.translate(np.array(pose['translation']))
    return [
        int(points_in_box(Box(a['translation'], a['size'],
                              Quaternion(a['rotation'])), pc.points[:3]).sum())
        for a in anns
    ]


def visibility_token(crossed, visible):
    """Visibility bin of the unoccluded fraction of a box's lidar rays."""
    fraction = visible / crossed if crossed else 0.0
    return next(tok for tok, _, upper in VISIBILITIES if fraction <= upper)


# --------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------
def _face_quads(p0, p1, height, bands, normal, colour):
    """Quads of a vertical face over the local bottom edge p0 -> p1, split
    into horizontal bands and pieces of at most PIECE metres."""
    n_u = max(1, math.ceil(np.linalg.norm(p1 - p0) / PIECE))
    u = np.linspace(0.0, 1.0, n_u + 1)
    quads, colours = [], []
    for v0, v1, band_colour in bands:
        c = colour if band_colour is None else np.array(band_colour, float)
        for a, b in zip(u[:-1], u[1:]):
            pa, pb = p0 + a * (p1 - p0), p0 + b * (p1 - p0)
            quads.append([[*pa, v0 * height], [*pb, v0 * height],
                          [*pb, v1 * height], [*pa, v1 * height]])
            colours.append(c)
    return quads, colours, [normal] * len(quads)


def _top_quads(hx, hy, height, colour):
    xs = np.linspace(-hx, hx, max(1, math.ceil(2 * hx / PIECE)) + 1)
    ys = np.linspace(-hy, hy, max(1, math.ceil(2 * hy / PIECE)) + 1)
    quads = [[[x0, y0, height], [x1, y0, height], [x1, y1, height],
              [x0, y1, height]] for x0, x1 in zip(xs[:-1], xs[1:])
             for y0, y1 in zip(ys[:-1], ys[1:])]
    return quads, [colour] * len(quads), [(0.0, 0.0, 1.0)] * len(quads)


def _building_bands(height):
    """Wall with one 1.4 m window row per 3.2 m floor."""
    bands, wall_from, z = [], 0.0, 0.0
    while z + 3.2 <= height:
        bands += [(wall_from / height, (z + 1.0) / height, None),
                  ((z + 1.0) / height, (z + 2.4) / height, WINDOW)]
        wall_from, z = z + 2.4, z + 3.2
    bands.append((wall_from / height, 1.0, None))
    return bands


def box_quads(lwh, bands, colour):
    """Local-frame quads (box bottom at z=0), colours and outward normals of
    the top and the four sides of a box."""
    hx, hy, h = lwh[0] / 2, lwh[1] / 2, lwh[2]
    corners = np.array([[hx, -hy], [hx, hy], [-hx, hy], [-hx, -hy]])
    normals = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0),
               (0.0, -1.0, 0.0))
    quads, colours, norms = _top_quads(hx, hy, h, colour)
    for i, normal in enumerate(normals):
        q, c, n = _face_quads(corners[i], corners[(i + 1) % 4], h, bands,
                              normal, colour)
        quads += q
        colours += c
        norms += n
    return quads, colours, norms


class RenderQuads:
    """Box faces of all actors in their local frames, built once per scene."""

    def __init__(self, world, names, brightness, rng):
        quads, colours, normals, owner = [], [], [], []
        for i, name in enumerate(names):
            if name == 'building':
                base = (60, 85, 150) if rng.random() < 0.5 else (165, 170, 170)
                bands = _building_bands(world.geo_lwh[i, 2])
            else:
                base, bands = STYLES[name]
                if world.attr[i] == 'cycle.with_rider':
                    bands = RIDER_BANDS
            colour = np.clip(np.array(base, float) * brightness[i], 0, 255)
            q, c, n = box_quads(world.geo_lwh[i], bands, colour)
            quads += q
            colours += c
            normals += n
            owner += [i] * len(q)
        self.local = np.array(quads, dtype=np.float64)
        self.colour = np.array(colours, dtype=np.float64)
        self.normal = np.array(normals, dtype=np.float64)
        self.owner = np.array(owner)
        self.label = np.where(world.annotated, world.kind + 1, 0)[self.owner]

    def world(self, centres, yaws, near):
        """World-frame quads, normals and (B, G, R, label) colours of the
        actors selected by ``near``, shaded by a fixed sun."""
        sel = near[self.owner]
        owner = self.owner[sel]
        rot = rot_z(yaws)[owner]
        bottom = centres * np.array([1.0, 1.0, 0.0])
        quads = np.einsum('qij,qkj->qki', rot, self.local[sel]) + \
            bottom[owner][:, None]
        normals = np.einsum('qij,qj->qi', rot, self.normal[sel])
        shade = 0.62 + 0.38 * np.clip(normals @ SUN, 0.0, 1.0)
        colour = np.concatenate(
            [self.colour[sel] * shade[:, None], self.label[sel][:, None]], 1)
        return quads, normals, colour


GROUND_STRIPS = (  # (|d| from, |d| to, BGR), mirrored on both sides
    (0.0, LANE_EDGE, (78, 76, 74)),
    (LANE_EDGE, PARK_INNER, (70, 70, 120)),
    (PARK_INNER, PARK_OUTER, (92, 90, 88)),
    (PARK_OUTER, FACADE, (160, 165, 168)),
    (FACADE, 45.0, (70, 115, 85)),
)
MARKINGS = (  # (|d|, width, dash length or 0 = solid, BGR)
    (0.12, 0.12, 0.0, (0, 190, 225)),
    (2 * LANE_IN, 0.12, 3.0, (225, 225, 225)),
    (LANE_EDGE - 0.15, 0.15, 0.0, (225, 225, 225)),
)


def ground_quads(road, s_lo, s_hi):
    """Ground tiles (road, bike lane, parking, sidewalk, verge, markings) and
    their (B, G, R, label=0) colours, markings last to paint over asphalt."""
    s = np.arange(s_lo, s_hi, PIECE)
    quads, colours = [], []

    def strip(d0, d1, length, colour):
        pts = [road.frame(s + ds, d)[:2] for ds, d in
               ((0.0, d0), (length, d0), (length, d1), (0.0, d1))]
        quads.append(np.stack([np.stack([x, y, np.zeros_like(x)], -1)
                               for x, y in pts], 1))
        colours.append(np.broadcast_to([*colour, 0.0], (len(s), 4)))

    for side in (-1.0, 1.0):
        for d0, d1, colour in GROUND_STRIPS:
            strip(side * d0, side * d1, PIECE, colour)
    for side in (-1.0, 1.0):
        for d, width, dash, colour in MARKINGS:
            strip(side * (d - width / 2), side * (d + width / 2),
                  dash or PIECE, colour)
    return np.concatenate(quads), np.concatenate(colours)


@functools.lru_cache(maxsize=None)
def _background(name):
    """Sky above and far ground below the horizon of a camera; the ego
    never tilts, so the horizon is fixed per camera.  (H, W, 4) BGR+label."""
    _, rotation, (f, cu, cv) = CAMERA_CALIB[name]
    u, v = np.meshgrid(np.arange(IMG_W), np.arange(IMG_H))
    rays = np.stack([(u - cu) / f, (v - cv) / f, np.ones((IMG_H, IMG_W))], -1)
    up = rays @ Quaternion(rotation).rotation_matrix[2] / np.linalg.norm(
        rays, axis=-1)
    mix = np.clip(up / 0.5, 0.0, 1.0)[..., None]
    sky = (1 - mix) * np.array(SKY_HORIZON) + mix * np.array(SKY_TOP)
    bg = np.where((up < 0)[..., None], np.array(FAR_GROUND, float), sky)
    return np.concatenate([bg, np.zeros((IMG_H, IMG_W, 1))],
                          -1).astype(np.uint8)


def camera_intrinsic(name):
    _, _, (f, cu, cv) = CAMERA_CALIB[name]
    return [[f, 0.0, cu], [0.0, f, cv], [0.0, 0.0, 1.0]]


class Camera:
    """Intrinsics, extrinsics and the constant sky/far-ground background."""

    def __init__(self, name):
        translation, rotation, (f, cu, cv) = CAMERA_CALIB[name]
        self.name = name
        self.translation = np.array(translation)
        self.rotation = Quaternion(rotation).rotation_matrix  # cam -> ego
        self.f, self.cu, self.cv = f, cu, cv
        self.background = _background(name)

    def project(self, pts):
        """Pixel coordinates in 1/16 px fixed point (cv2 ``shift=4``)."""
        uv = self.f * pts[..., :2] / pts[..., 2:] + np.array([self.cu,
                                                             self.cv])
        return np.round(uv * 16).astype(np.int32)


def _clip_near(poly):
    """Sutherland-Hodgman clip of a camera-frame polygon against z > NEAR."""
    out = []
    for a, b in zip(poly, np.roll(poly, -1, 0)):
        if a[2] > NEAR:
            out.append(a)
        if (a[2] > NEAR) != (b[2] > NEAR):
            out.append(a + (NEAR - a[2]) / (b[2] - a[2]) * (b - a))
    return np.array(out)


def _view_polygons(cam, quads_c):
    """Pixel polygons of camera-frame quads that may be visible, and the
    indices of those quads."""
    front = quads_c[..., 2] > NEAR
    full = np.flatnonzero(front.all(1))
    pix = cam.project(quads_c[full])
    outside = ((pix[..., 0] < 0).all(1) | (pix[..., 0] > IMG_W * 16).all(1) |
               (pix[..., 1] < 0).all(1) | (pix[..., 1] > IMG_H * 16).all(1))
    polys = list(pix[~outside])
    index = list(full[~outside])
    for k in np.flatnonzero(front.any(1) & ~front.all(1)):
        polys.append(cam.project(_clip_near(quads_c[k])))
        index.append(k)
    return polys, np.array(index, dtype=np.int64)


def _paint(canvas, cam, centre, rot_gc, quads, colours, normals=None):
    """Paint quads within RENDER_RANGE; with ``normals``, only faces towards
    the camera and far to near (painter's algorithm), else in given order."""
    mid = quads.mean(1)
    dist = np.linalg.norm(mid - centre, axis=1)
    sel = dist < RENDER_RANGE
    if normals is not None:
        sel &= np.einsum('qi,qi->q', normals, mid - centre) < 0
    sel = np.flatnonzero(sel)
    polys, index = _view_polygons(cam, (quads[sel] - centre) @ rot_gc)
    if normals is None:
        order = np.argsort(index, kind='stable')
    else:
        order = np.argsort(-dist[sel[index]], kind='stable')
    colour = colours[sel[index]].tolist()
    for k in order:
        cv2.fillConvexPoly(canvas, polys[k], colour[k], cv2.LINE_8, 4)


def render_camera(cam, ego_rot, ego_pos, ground, boxes):
    """BGR + class-label canvas (H, W, 4) of one camera.

    Ground tiles are painted first (they never occlude anything above the
    ground), then the box faces, far to near.
    """
    rot_gc = ego_rot @ cam.rotation
    centre = ego_rot @ cam.translation + ego_pos
    canvas = cam.background.copy()
    _paint(canvas, cam, centre, rot_gc, *ground)
    quads, normals, colours = boxes
    _paint(canvas, cam, centre, rot_gc, quads, colours, normals)
    return canvas


def write_mask_png(path, mask):
    """Write an 8-bit greyscale PNG without row filters.

    libpng's adaptive filter search takes ~5x longer than compressing these
    mostly flat masks, and the masks are 1/3 of all files written.
    """
    height, width = mask.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0
    rows[:, 1:] = mask

    def chunk(tag, data):
        return (struct.pack('>I', len(data)) + tag + data +
                struct.pack('>I', zlib.crc32(tag + data)))

    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' +
                chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0,
                                           0, 0, 0)) +
                chunk(b'IDAT', zlib.compress(rows.tobytes(), 1)) +
                chunk(b'IEND', b''))


# --------------------------------------------------------------------------
# Scene generation (one worker job per scene)
# --------------------------------------------------------------------------
def _lidar_schedule(frames, sweeps):
    """(time offset in us, keyframe index or None, sample index) of every
    lidar sweep in time order; non-keyframe sweeps belong to the next
    keyframe's sample, as in nuScenes."""
    out = []
    for j in range(frames):
        out.append((j * KEYFRAME_US, j, j))
        if j + 1 < frames:
            out += [(j * KEYFRAME_US + i * KEYFRAME_US // (sweeps + 1), None,
                     j + 1) for i in range(1, sweeps + 1)]
    return out


def _link(records):
    """Set prev/next tokens of a time-ordered list of records."""
    for a, b in zip(records[:-1], records[1:]):
        a['next'], b['prev'] = b['token'], a['token']


class SceneWriter:
    """Writes the sensor files and collects the table records of one scene."""

    def __init__(self, out_dir, seed, index, name, frames, sweeps):
        self.out_dir, self.seed, self.name = out_dir, seed, name
        self.frames, self.sweeps = frames, sweeps
        self.index = index
        self.log = f'synthetic-seed{seed}-{name}'
        self.base_ts = FIRST_TIMESTAMP_US + index * 3_600_000_000
        self.world = build_world(np.random.default_rng([seed, index]), frames)
        end = self.world.ego.s((frames - 1) * KEYFRAME_US / 1e6)
        self.ground = ground_quads(self.world.road, -RENDER_RANGE - PIECE,
                                   end + RENDER_RANGE + PIECE)
        self.cams = [Camera(c) for c in CAMERAS]
        scene_tok = self.tok('scene')
        self.samples = [{'token': self.tok('sample', j),
                         'timestamp': self.base_ts + j * KEYFRAME_US,
                         'prev': '', 'next': '', 'scene_token': scene_tok}
                        for j in range(frames)]
        _link(self.samples)
        self.sample_data = {c: [] for c in ('LIDAR_TOP', ) + CAMERAS}
        self.ego_poses, self.annotations = [], []
        self.tracks = {}  # actor index -> its annotations in time order
        self.stats = {'points': [], 'annotations': [],
                      'within_50m': np.zeros(len(CLASSES), dtype=np.int64)}

    def tok(self, *parts):
        return token(self.seed, self.name, *parts)

    def add_sample_data(self, channel, ts, sample, filename, pose, key=True):
        sd_tok = self.tok(channel, ts)
        self.ego_poses.append({'token': sd_tok, 'timestamp': ts,
                               'rotation': pose[1], 'translation': pose[0]})
        camera = channel != 'LIDAR_TOP'
        self.sample_data[channel].append({
            'token': sd_tok, 'sample_token': self.samples[sample]['token'],
            'ego_pose_token': sd_tok,
            'calibrated_sensor_token': token(self.seed, 'calibrated_sensor',
                                             channel),
            'timestamp': ts, 'fileformat': 'jpg' if camera else 'pcd',
            'is_key_frame': key, 'height': IMG_H if camera else 0,
            'width': IMG_W if camera else 0, 'filename': filename,
            'prev': '', 'next': ''})

    def run(self):
        """Write all sweeps and keyframe images; return (records, stats)."""
        schedule = _lidar_schedule(self.frames, self.sweeps)
        for n, (offset, key, sample) in enumerate(schedule):
            t, ts = offset / 1e6, self.base_ts + offset
            pose = self.world.ego_pose(t)
            centres, yaws = self.world.state(t)
            folder = 'sweeps' if key is None else 'samples'
            filename = (f'{folder}/LIDAR_TOP/{self.log}__LIDAR_TOP__'
                        f'{ts}.pcd.bin')
            self.add_sample_data('LIDAR_TOP', ts, sample, filename, pose,
                                 key is not None)
            near, crossed, visible = self.write_lidar(
                filename, pose, centres, yaws, n)
            if key is not None:
                self.annotate(key, filename, pose, centres, yaws, near,
                              crossed, visible)
                self.write_images(key, ts, pose, centres, yaws, near)
        return self.records(), self.stats

    def write_lidar(self, filename, pose, centres, yaws, sweep_index):
        """Cast and store one sweep; returns the indices of the actors in
        range and their crossed/visible ray counts."""
        ego_rot = Quaternion(pose[1]).rotation_matrix
        rot_gl = ego_rot @ Quaternion(LIDAR_CALIB['rotation']).rotation_matrix
        origin = ego_rot @ np.array(LIDAR_CALIB['translation']) + pose[0]
        near = np.flatnonzero(
            np.hypot(*(centres[:, :2] - origin[:2]).T) < SIM_RANGE)
        depth, owner, crossed, visible = cast_lidar(
            origin, rot_gl, centres[near], yaws[near],
            self.world.geo_lwh[near] / 2)
        rng = np.random.default_rng([self.seed, self.index, sweep_index])
        cloud = lidar_points(depth, owner, self.world.intensity[near], rng)
        cloud.tofile(osp.join(self.out_dir, filename))
        self.stats['points'].append(len(cloud))
        return near, crossed, visible

    def annotate(self, key, filename, pose, centres, yaws, near, crossed,
                 visible):
        """Annotations of keyframe ``key``; num_lidar_pts is counted in the
        cloud already written to ``filename``."""
        world = self.world
        dist = np.hypot(*(centres[:, :2] - np.array(pose[0][:2])).T)
        slot = {a: k for k, a in enumerate(near)}
        anns = []
        for a in np.flatnonzero(world.annotated & (dist <= ANNOTATION_RANGE)):
            length, width, height = world.lwh[a].tolist()
            attr = world.attr[a]
            anns.append({
                'token': self.tok('annotation', key, a),
                'sample_token': self.samples[key]['token'],
                'instance_token': self.tok('instance', a),
                'visibility_token': visibility_token(crossed[slot[a]],
                                                     visible[slot[a]]),
                'attribute_tokens':
                [token(self.seed, 'attribute', attr)] if attr else [],
                'translation': centres[a].tolist(),
                'size': [width, length, height],  # devkit order
                'rotation': yaw_quaternion(float(yaws[a])),
                'prev': '', 'next': '', 'num_lidar_pts': 0,
                'num_radar_pts': 0})
            self.tracks.setdefault(int(a), []).append(anns[-1])
            if dist[a] <= 50.0:
                self.stats['within_50m'][world.kind[a]] += 1
        counts = count_box_points(
            osp.join(self.out_dir, filename), LIDAR_CALIB,
            {'translation': pose[0], 'rotation': pose[1]}, anns)
        for ann, count in zip(anns, counts):
            ann['num_lidar_pts'] = count
        self.annotations += anns
        self.stats['annotations'].append(len(anns))

    def write_images(self, key, ts, pose, centres, yaws, near):
        """Render the six cameras: JPEG image and PNG class mask each."""
        ego_rot = Quaternion(pose[1]).rotation_matrix
        mask = np.zeros(len(centres), dtype=bool)
        mask[near] = True
        boxes = self.world.quads.world(centres, yaws, mask)
        for cam in self.cams:
            stem = f'{self.log}__{cam.name}__{ts}'
            filename = f'samples/{cam.name}/{stem}.jpg'
            self.add_sample_data(cam.name, ts, key, filename, pose)
            canvas = render_camera(cam, ego_rot, np.array(pose[0]),
                                   self.ground, boxes)
            cv2.imwrite(osp.join(self.out_dir, filename),
                        cv2.cvtColor(canvas, cv2.COLOR_BGRA2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            write_mask_png(osp.join(self.out_dir, 'seg_masks', cam.name,
                                    f'{stem}.png'),
                           cv2.extractChannel(canvas, 3))

    def records(self):
        """Table records of this scene."""
        instances = []
        for a, anns in self.tracks.items():  # in order of first appearance
            _link(anns)
            category = CLASS_TO_CATEGORY[KINDS[self.world.kind[a]]]
            instances.append({
                'token': anns[0]['instance_token'],
                'category_token': token(self.seed, 'category', category),
                'nbr_annotations': len(anns),
                'first_annotation_token': anns[0]['token'],
                'last_annotation_token': anns[-1]['token']})
        for sds in self.sample_data.values():
            _link(sds)
        log_tok = token(self.seed, 'log', self.name)
        return {
            'log': [{'token': log_tok, 'logfile': self.log, 'vehicle': 'n015',
                     'date_captured': '2018-07-24',
                     'location': SCENE_LOCATIONS[self.name]}],
            'scene': [{
                'token': self.samples[0]['scene_token'], 'log_token': log_tok,
                'nbr_samples': self.frames,
                'first_sample_token': self.samples[0]['token'],
                'last_sample_token': self.samples[-1]['token'],
                'name': self.name,
                'description': f'Synthetic boulevard, ego '
                               f'{self.world.ego.v0:.1f} m/s, '
                               f'{len(instances)} annotated objects'}],
            'sample': self.samples,
            'sample_data': [sd for sds in self.sample_data.values()
                            for sd in sds],
            'ego_pose': self.ego_poses,
            'instance': instances,
            'sample_annotation': self.annotations,
        }


def generate_scene(job):
    """Worker entry: generate one scene, return (table records, stats)."""
    return SceneWriter(*job).run()


# --------------------------------------------------------------------------
# Tables, converter and entry point
# --------------------------------------------------------------------------
def static_tables(seed):
    """Tables that do not depend on the scenes."""
    def named(table, entries):
        return [{'token': token(seed, table, n), 'name': n, 'description': d}
                for n, d in entries]

    sensors = [{'token': token(seed, 'sensor', c), 'channel': c,
                'modality': 'lidar' if c == 'LIDAR_TOP' else 'camera'}
               for c in ('LIDAR_TOP', ) + CAMERAS]
    calibrated = [{'token': token(seed, 'calibrated_sensor', 'LIDAR_TOP'),
                   'sensor_token': token(seed, 'sensor', 'LIDAR_TOP'),
                   **LIDAR_CALIB, 'camera_intrinsic': []}]
    for c in CAMERAS:
        translation, rotation, _ = CAMERA_CALIB[c]
        calibrated.append({
            'token': token(seed, 'calibrated_sensor', c),
            'sensor_token': token(seed, 'sensor', c),
            'translation': translation, 'rotation': rotation,
            'camera_intrinsic': camera_intrinsic(c)})
    return {
        'category': named('category', CATEGORIES),
        'attribute': named('attribute', ATTRIBUTES),
        'visibility': [{'token': tok, 'level': level,
                        'description': f'visibility of whole object is '
                                       f'between {level[1:].split("-")[0]} '
                                       f'and {level.split("-")[1]}%'}
                       for tok, level, _ in VISIBILITIES],
        'sensor': sensors,
        'calibrated_sensor': calibrated,
    }


def map_table(seed, logs):
    """One placeholder map per location (the devkit requires the table and
    its PNG files; the masks carry no drivable-area information)."""
    locations = sorted({log['location'] for log in logs})
    return [{'token': token(seed, 'map', loc),
             'log_tokens': [log['token'] for log in logs
                            if log['location'] == loc],
             'category': 'semantic_prior',
             'filename': f'maps/{token(seed, "map", loc)}.png'}
            for loc in locations]


TABLE_NAMES = ('category', 'attribute', 'visibility', 'instance', 'sensor',
               'calibrated_sensor', 'ego_pose', 'log', 'scene', 'sample',
               'sample_data', 'sample_annotation', 'map')
OUTPUT_ENTRIES = ('v1.0-mini', 'maps', 'samples', 'sweeps', 'seg_masks',
                  'nuscenes_gt_database', 'nuscenes_infos_train.pkl',
                  'nuscenes_infos_val.pkl', 'nuscenes_dbinfos_train.pkl')


def _holds_synthetic_data(out_dir):
    try:
        with open(osp.join(out_dir, VERSION, 'log.json')) as f:
            logs = json.load(f)
    except (OSError, ValueError):
        return False
    return all(log['logfile'].startswith('synthetic-') for log in logs)


def _prepare_out_dir(out_dir):
    """Remove the outputs of a previous run (only the entries this module
    writes) and create the output folders.  Refuses to delete anything in a
    folder that does not hold a synthetic dataset (e.g. real nuScenes)."""
    existing = [e for e in OUTPUT_ENTRIES if osp.exists(osp.join(out_dir, e))]
    if existing and not _holds_synthetic_data(out_dir):
        raise FileExistsError(
            f'{out_dir} has {existing} but no synthetic dataset tables; '
            'refusing to overwrite, remove them or choose another --out')
    for entry in existing:
        path = osp.join(out_dir, entry)
        if osp.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    folders = [VERSION, 'maps', 'sweeps/LIDAR_TOP', 'samples/LIDAR_TOP']
    folders += [f'{top}/{cam}' for cam in CAMERAS
                for top in ('samples', 'seg_masks')]
    for folder in folders:
        os.makedirs(osp.join(out_dir, folder))


def write_tables(out_dir, seed, scene_records):
    tables = static_tables(seed)
    for name in TABLE_NAMES:
        if name not in tables and name != 'map':
            tables[name] = [r for rec in scene_records for r in rec[name]]
    tables['map'] = map_table(seed, tables['log'])
    for name in TABLE_NAMES:
        with open(osp.join(out_dir, VERSION, f'{name}.json'), 'w') as f:
            json.dump(tables[name], f)
    for record in tables['map']:
        write_mask_png(osp.join(out_dir, record['filename']),
                       np.zeros((64, 64), dtype=np.uint8))
    return tables


def run_mmdet3d_converter(out_dir, max_sweeps=10):
    """Run ``tools/create_data.py nuscenes`` shipped inside mmdet3d.

    The converter's info-update step opens ``./data/nuscenes`` relative to
    the working directory, so it runs in a temporary directory where that
    path links to ``out_dir``; ``tools.dataset_converters`` resolves from the
    package's ``.mim`` folder put on PYTHONPATH.  Paths inside the infos are
    then relative (``data/nuscenes/...``) and independent of ``out_dir``.
    BLAS/OpenMP pools are limited to one thread: the converter does many
    tiny matrix operations, which thread start-up slows down several times.
    """
    from importlib.util import find_spec
    mim = osp.join(find_spec('mmdet3d').submodule_search_locations[0], '.mim')
    script = osp.join(mim, 'tools', 'create_data.py')
    with tempfile.TemporaryDirectory() as cwd:
        os.makedirs(osp.join(cwd, 'data'))
        os.symlink(osp.abspath(out_dir), osp.join(cwd, 'data', 'nuscenes'))
        proc = subprocess.run(
            [sys.executable, script, 'nuscenes', '--root-path',
             './data/nuscenes', '--out-dir', './data/nuscenes', '--extra-tag',
             'nuscenes', '--version', VERSION, '--max-sweeps',
             str(max_sweeps)],
            cwd=cwd, env=dict(os.environ, PYTHONPATH=mim, OMP_NUM_THREADS='1',
                              OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1'),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        raise RuntimeError('mmdet3d converter failed:\n' + proc.stdout[-5000:])


def generate(out_dir, scenes=10, frames=40, seed=0,
             sweeps_per_sample=DEFAULT_SWEEPS_PER_SAMPLE, workers=2,
             run_converter=True):
    """Generate the synthetic dataset into ``out_dir``; returns a summary.

    Args:
        scenes: number of scenes (1..10), the first of SCENE_NAMES; 10 gives
            the 8 mini_train and 2 mini_val scenes, any >= 2 has a val scene.
        frames: keyframes per scene (2 Hz).
        seed: all content and tokens derive from it.
        sweeps_per_sample: non-keyframe lidar sweeps between keyframes.
        workers: processes generating scenes in parallel.
        run_converter: also run mmdet3d's converter (info pkls, GT database).
    """
    if not 1 <= scenes <= len(SCENE_NAMES):
        raise ValueError(f'scenes must be in 1..{len(SCENE_NAMES)}')
    if frames < 1 or sweeps_per_sample < 0:
        raise ValueError('frames must be >= 1 and sweeps_per_sample >= 0')
    start = time.time()
    os.makedirs(out_dir, exist_ok=True)
    _prepare_out_dir(out_dir)
    jobs = [(out_dir, seed, i, SCENE_NAMES[i], frames, sweeps_per_sample)
            for i in range(scenes)]
    if workers > 1:
        with multiprocessing.get_context('fork').Pool(
                min(workers, scenes)) as pool:
            results = pool.map(generate_scene, jobs, chunksize=1)
    else:
        results = [generate_scene(job) for job in jobs]
    tables = write_tables(out_dir, seed, [rec for rec, _ in results])
    summary = _summary(tables, [stats for _, stats in results])
    summary['generate_s'] = round(time.time() - start, 1)
    if run_converter:
        start = time.time()
        run_mmdet3d_converter(out_dir)
        summary['converter_s'] = round(time.time() - start, 1)
    return summary


def _summary(tables, stats):
    within = sum(s['within_50m'] for s in stats)
    keyframes = len(tables['sample'])
    return {
        'scenes': len(tables['scene']),
        'train_scenes': sum(s['name'] in mini_train for s in tables['scene']),
        'val_scenes': sum(s['name'] in mini_val for s in tables['scene']),
        'keyframes': keyframes,
        'lidar_sweeps': sum(len(s['points']) for s in stats),
        'mean_points_per_sweep': round(float(np.mean(
            [p for s in stats for p in s['points']])), 1),
        'mean_annotations_per_frame': round(
            len(tables['sample_annotation']) / keyframes, 2),
        'mean_annotations_within_50m': round(within.sum() / keyframes, 2),
        'class_share_within_50m': {
            c: round(float(n / max(within.sum(), 1)), 3)
            for c, n in zip(CLASSES, within)},
        'annotations_with_points': round(float(np.mean(
            [a['num_lidar_pts'] > 0 for a in tables['sample_annotation']])),
            3),
    }
