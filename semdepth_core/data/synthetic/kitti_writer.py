"""Synthetic drives, the KITTI writer: calibration texts, OXTS records (devkit Mercator projection),
timestamps, and `generate_drive`, which renders a drive and writes it in the exact KITTI raw layout."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .scene import (
    BASELINE,
    CAM_HEIGHT,
    EARTH_RADIUS,
    GRAVITY,
    EgoTrajectory,
    _inv,
    _rx,
    _ry,
    _rz,
    _se3,
    make_drive_scene,
)
from .sensors import render_frame, render_lidar

OXTS_FIELDS = (
    ("lat", "latitude of the OXTS unit (deg)"),
    ("lon", "longitude of the OXTS unit (deg)"),
    ("alt", "altitude of the OXTS unit (m)"),
    ("roll", "roll angle (rad), 0 = level, positive = left side up, range -pi .. +pi"),
    ("pitch", "pitch angle (rad), 0 = level, positive = front down, range -pi/2 .. +pi/2"),
    ("yaw", "heading (rad), 0 = east, positive = counter clockwise, range -pi .. +pi"),
    ("vn", "velocity towards north (m/s)"),
    ("ve", "velocity towards east (m/s)"),
    ("vf", "forward velocity, parallel to the earth surface (m/s)"),
    ("vl", "leftward velocity, parallel to the earth surface (m/s)"),
    ("vu", "upward velocity, perpendicular to the earth surface (m/s)"),
    ("ax", "acceleration along the vehicle x axis (front) (m/s^2)"),
    ("ay", "acceleration along the vehicle y axis (left) (m/s^2)"),
    ("az", "acceleration along the vehicle z axis (top) (m/s^2)"),
    ("af", "forward acceleration (m/s^2)"),
    ("al", "leftward acceleration (m/s^2)"),
    ("au", "upward acceleration (m/s^2)"),
    ("wx", "angular rate around the vehicle x axis (rad/s)"),
    ("wy", "angular rate around the vehicle y axis (rad/s)"),
    ("wz", "angular rate around the vehicle z axis (rad/s)"),
    ("wf", "angular rate around the forward axis (rad/s)"),
    ("wl", "angular rate around the leftward axis (rad/s)"),
    ("wu", "angular rate around the upward axis (rad/s)"),
    ("pos_accuracy", "position accuracy (north/east, m)"),
    ("vel_accuracy", "velocity accuracy (north/east, m/s)"),
    ("navstat", "navigation status"),
    ("numsats", "number of satellites tracked by the primary GPS receiver"),
    ("posmode", "position mode of the primary GPS receiver"),
    ("velmode", "velocity mode of the primary GPS receiver"),
    ("orimode", "orientation mode of the primary GPS receiver"),
)


def _fmt(vals) -> str:
    return " ".join("%.6e" % float(v) for v in np.asarray(vals, dtype=np.float64).ravel())


def _parse(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        try:
            out[k] = np.array([float(x) for x in v.split()])
        except ValueError:
            pass
    return out


def intrinsics(width: int, height: int) -> np.ndarray:
    """Rectified intrinsics at (width, height): KITTI-like field of view (fx ≈ 0.58 W)."""
    fx = round(0.58 * width, 3)
    return np.array([[fx, 0.0, round(0.4908 * width, 3)], [0.0, fx, round(0.4609 * height, 3)], [0.0, 0.0, 1.0]])


def _calib_texts(width: int, height: int, date: str) -> tuple[str, str, str]:
    K = intrinsics(width, height)
    fx = K[0, 0]
    d = _dt.datetime.strptime(date, "%Y_%m_%d")
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[d.month - 1]
    when = f"{d.day:02d}-{month}-{d.year} 12:00:00"          # KITTI style, independent of the locale
    lines = [f"calib_time: {when}", f"corner_dist: {_fmt([0.0995])}"]
    for c in range(4):
        tx = -BASELINE if c in (1, 3) else 0.0
        P = np.hstack([K, np.array([[fx * tx], [0.0], [0.0]])])
        lines += [
            f"S_0{c}: {_fmt([width, height])}",
            f"K_0{c}: {_fmt(K)}",
            f"D_0{c}: {_fmt(np.zeros(5))}",
            f"R_0{c}: {_fmt(np.eye(3))}",
            f"T_0{c}: {_fmt([tx, 0.0, 0.0])}",
            f"S_rect_0{c}: {_fmt([width, height])}",
            f"R_rect_0{c}: {_fmt(np.eye(3))}",
            f"P_rect_0{c}: {_fmt(P)}",
        ]
    cam = "\n".join(lines) + "\n"
    # velodyne -> camera 0: axes permutation plus a small mounting rotation, KITTI-like lever arm
    R_axes = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    R_cv = _rx(0.0089) @ _ry(-0.0061) @ _rz(0.0043) @ R_axes
    t_cv = np.array([-0.004069, -0.076316, -0.271781])
    velo = (f"calib_time: {when}\nR: {_fmt(R_cv)}\nT: {_fmt(t_cv)}\n"
            f"delta_f: {_fmt([0, 0])}\ndelta_c: {_fmt([0, 0])}\n")
    R_vi = _rz(0.00079) @ _ry(-0.00203) @ _rx(0.0148)
    t_vi = np.array([-0.808676, 0.319556, -0.799723])
    imu = f"calib_time: {when}\nR: {_fmt(R_vi)}\nT: {_fmt(t_vi)}\n"
    return cam, velo, imu


@dataclass
class Rig:
    K: np.ndarray
    T_cam_velo: np.ndarray      # velodyne -> rectified camera 2 (= camera 0 here)
    T_velo_imu: np.ndarray
    T_cam_imu: np.ndarray
    baseline: float


def _rig_from_texts(cam: str, velo: str, imu: str) -> Rig:
    c, v, i = _parse(cam), _parse(velo), _parse(imu)
    P2 = c["P_rect_02"].reshape(3, 4)
    P3 = c["P_rect_03"].reshape(3, 4)
    K = P2[:, :3].copy()
    R_rect = np.eye(4)
    R_rect[:3, :3] = c["R_rect_00"].reshape(3, 3)
    T2 = np.eye(4)
    T2[0, 3] = P2[0, 3] / P2[0, 0]
    T_cv = T2 @ R_rect @ _se3(v["R"].reshape(3, 3), v["T"])
    T_vi = _se3(i["R"].reshape(3, 3), i["T"])
    baseline = (P2[0, 3] - P3[0, 3]) / P2[0, 0]
    return Rig(K, T_cv, T_vi, T_cv @ T_vi, float(baseline))


def _write_if_consistent(path: Path, text: str) -> None:
    if path.exists():
        if path.read_text() != text:
            raise ValueError(f"{path} already exists with a different calibration (other image size?); "
                             "use another date for drives of a different resolution")
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------
# OXTS
# ----------------------------------------------------------------------------------------------
def _mercator(lat, lon, scale):
    x = scale * EARTH_RADIUS * np.deg2rad(lon)
    y = scale * EARTH_RADIUS * np.log(np.tan(np.deg2rad(90.0 + np.asarray(lat)) / 2.0))
    return x, y


def _inv_mercator(x, y, scale):
    lon = np.rad2deg(np.asarray(x) / (scale * EARTH_RADIUS))
    lat = np.rad2deg(2.0 * np.arctan(np.exp(np.asarray(y) / (scale * EARTH_RADIUS)))) - 90.0
    return lat, lon


def _fmt_oxts(v: float) -> str:
    s = "%.14g" % v
    return "0" if s == "-0" else s


def _oxts_records(ego: EgoTrajectory, times: np.ndarray, origin: dict, seed: int) -> np.ndarray:
    """[N,30] OXTS fields at `times` for the ego IMU trajectory; scene frame rotated by
    origin['yaw0'] about z and placed at (lat0, lon0, alt0) via the devkit Mercator projection."""
    lat0, lon0, alt0, yaw0 = origin["lat0"], origin["lon0"], origin["alt0"], origin["yaw0"]
    scale = math.cos(math.radians(lat0))
    mx0, my0 = _mercator(lat0, lon0, scale)
    Rz0 = _rz(yaw0)
    p_first = ego.position(times[0])
    h = 1e-3
    rows = []
    for t in times:
        p = ego.position(t)
        m = Rz0 @ (p - p_first)
        lat, lon = _inv_mercator(mx0 + m[0], my0 + m[1], scale)
        alt = alt0 + m[2]
        roll, pitch = float(ego.roll(t)), float(ego.pitch(t))
        yaw = float(np.mod(ego.yaw(t) + yaw0 + math.pi, 2 * math.pi) - math.pi)
        vel = Rz0 @ (ego.position(t + h) - ego.position(t - h)) / (2 * h)
        acc = Rz0 @ (ego.position(t + h) - 2 * p + ego.position(t - h)) / (h * h)
        R = Rz0 @ ego.rotation(t)
        Rl = _rz(yaw)                                             # level (heading-only) frame
        dR = (Rz0 @ ego.rotation(t + h) - Rz0 @ ego.rotation(t - h)) / (2 * h)
        Om = R.T @ dR
        w_body = np.array([Om[2, 1] - Om[1, 2], Om[0, 2] - Om[2, 0], Om[1, 0] - Om[0, 1]]) / 2
        w_level = Rl.T @ (R @ w_body)
        f = acc + np.array([0.0, 0.0, GRAVITY])                   # specific force
        a_body = R.T @ f
        a_level = Rl.T @ f
        v_level = Rl.T @ vel
        rows.append([lat, lon, alt, roll, pitch, yaw, vel[1], vel[0], v_level[0], v_level[1], v_level[2],
                     *a_body, *a_level, *w_body, *w_level])
    rows = np.asarray(rows, dtype=np.float64)
    n = rows.shape[0]
    u = np.random.default_rng([int(seed), 5]).random((n, 2))     # row i depends on i only (prefix-stable)
    pos_acc = 0.02 + 0.01 * u[:, 0]
    vel_acc = 0.01 + 0.005 * u[:, 1]
    status = np.tile(np.array([4, 11, 6, 6, 6], float), (n, 1))
    return np.hstack([rows, pos_acc[:, None], vel_acc[:, None], status])


def _oxts_line(rec) -> str:
    vals = [_fmt_oxts(v) for v in rec[:25]] + [str(int(v)) for v in rec[25:]]
    return " ".join(vals) + "\n"


def oxts_camera_poses(records: np.ndarray, T_cam_imu: np.ndarray) -> np.ndarray:
    """Camera poses from OXTS records (devkit convention, relative to the first packet's
    position): T_world_cam = T_world_imu @ inv(T_cam_imu). Used to verify the written files."""
    recs = np.asarray(records, dtype=np.float64)
    scale = math.cos(math.radians(recs[0, 0]))
    mx, my = _mercator(recs[:, 0], recs[:, 1], scale)
    t = np.stack([mx, my, recs[:, 2]], 1)
    t = t - t[0]
    out = []
    T_imu_cam = _inv(T_cam_imu)
    for k in range(recs.shape[0]):
        R = _rz(recs[k, 5]) @ _ry(recs[k, 4]) @ _rx(recs[k, 3])
        out.append(_se3(R, t[k]) @ T_imu_cam)
    return np.asarray(out)


def _timestamp_str(base: _dt.datetime, seconds: float) -> str:
    ns = int(round(seconds * 1e9))
    t = base + _dt.timedelta(microseconds=ns // 1000)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + "%06d%03d" % (t.microsecond, ns % 1000)


def _write_lines(path: Path, lines) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _validate(frames, seed, width, height, speed, drive_id, date):
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 32 or v > 4096:
            raise ValueError(f"{name} must be an integer in [32, 4096], got {v!r}")
    if not (isinstance(speed, (int, float)) and math.isfinite(speed) and 0.0 <= speed <= 40.0):
        raise ValueError(f"speed must be in [0, 40] m/s, got {speed!r}")
    if drive_id is not None and (isinstance(drive_id, bool) or not isinstance(drive_id, (int, np.integer))
                                 or not 0 <= drive_id <= 9999):
        raise ValueError(f"drive_id must be an integer in [0, 9999], got {drive_id!r}")
    try:
        day = _dt.datetime.strptime(date, "%Y_%m_%d")
    except (TypeError, ValueError):
        raise ValueError(f"date must look like YYYY_MM_DD, got {date!r}") from None
    if not _dt.datetime(1970, 1, 2) <= day < _dt.datetime(2038, 1, 1):
        raise ValueError(f"date {date!r}: stamps must fit ROS 2 Time (int32 seconds since 1970, before 2038)")


def generate_drive(out_root, frames: int, seed: int, width: int = 640, height: int = 192, lead_car: bool = False,
                   speed: float = 10.0, drive_id: int | None = None, date: str = "2030_01_01") -> Path:
    """Render a synthetic drive in KITTI raw layout under out_root/date; returns the drive dir."""
    _validate(frames, seed, width, height, speed, drive_id, date)
    frames, seed, width, height = int(frames), int(seed), int(width), int(height)
    drive_id = int(seed % 10000) if drive_id is None else int(drive_id)
    date_dir = Path(out_root) / date
    drive_dir = date_dir / f"{date}_drive_{drive_id:04d}_sync"
    date_dir.mkdir(parents=True, exist_ok=True)
    if drive_dir.exists():
        # regenerating replaces a drive written by this generator (no stale frames are left);
        # anything else in the way is not ours to delete
        if not (drive_dir / "scene.json").is_file():
            raise ValueError(f"{drive_dir} exists and is not a synthetic drive; choose another drive_id or out_root")
        shutil.rmtree(drive_dir)

    cam_txt, velo_txt, imu_txt = _calib_texts(width, height, date)
    _write_if_consistent(date_dir / "calib_cam_to_cam.txt", cam_txt)
    _write_if_consistent(date_dir / "calib_velo_to_cam.txt", velo_txt)
    _write_if_consistent(date_dir / "calib_imu_to_velo.txt", imu_txt)
    rig = _rig_from_texts(cam_txt, velo_txt, imu_txt)
    K = rig.K

    scene, ego, times = make_drive_scene(frames, seed, speed, lead_car)
    # camera height: place the IMU so that camera 2 sits CAM_HEIGHT above the road
    T_imu_cam = _inv(rig.T_cam_imu)
    ego.imu_height = CAM_HEIGHT - float(T_imu_cam[2, 3])
    T_imu_velo = _inv(rig.T_velo_imu)
    T_cam2_cam3 = _se3(np.eye(3), [rig.baseline, 0.0, 0.0])

    dirs = {k: drive_dir / k for k in ("image_02/data", "image_03/data", "oxts/data", "velodyne_points/data",
                                        "proj_depth/groundtruth/image_02", "semantic/image_02", "dynamic/image_02")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    poses_cam, poses_velo, poses_imu = [], [], []
    for i, t in enumerate(times):
        snap = scene.at(float(t))
        T_wi = ego.T_world_imu(float(t))
        T_wc = T_wi @ T_imu_cam
        T_wv = T_wi @ T_imu_velo
        name = f"{i:010d}"
        rgb, depth, sem, dyn = render_frame(snap, T_wc, K, width, height)
        rgb3, _, _, _ = render_frame(snap, T_wc @ T_cam2_cam3, K, width, height)
        cv2.imwrite(str(dirs["image_02/data"] / f"{name}.png"), rgb[..., ::-1])
        cv2.imwrite(str(dirs["image_03/data"] / f"{name}.png"), rgb3[..., ::-1])
        d16 = np.clip(np.rint(depth.astype(np.float64) * 256.0), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(dirs["proj_depth/groundtruth/image_02"] / f"{name}.png"), d16)
        cv2.imwrite(str(dirs["semantic/image_02"] / f"{name}.png"), sem)
        cv2.imwrite(str(dirs["dynamic/image_02"] / f"{name}.png"), dyn)
        pts = render_lidar(snap, T_wv, seed=seed * 100003 + i)
        pts.tofile(dirs["velodyne_points/data"] / f"{name}.bin")
        poses_cam.append(T_wc)
        poses_velo.append(T_wv)
        poses_imu.append(T_wi)

    # OXTS: geodetic origin and heading from the seed
    org_rng = np.random.default_rng([seed, 3])
    origin = {
        "lat0": float(_fmt_oxts(48.9 + org_rng.uniform(0, 0.2))),
        "lon0": float(_fmt_oxts(8.3 + org_rng.uniform(0, 0.2))),
        "alt0": float(_fmt_oxts(110.0 + org_rng.uniform(0, 10))),
        "yaw0": float(org_rng.uniform(-math.pi, math.pi)),
    }
    recs = _oxts_records(ego, times, origin, seed)
    for i, rec in enumerate(recs):
        (dirs["oxts/data"] / f"{i:010d}.txt").write_text(_oxts_line(rec))
    (drive_dir / "oxts" / "dataformat.txt").write_text("".join(f"{k}: {d}\n" for k, d in OXTS_FIELDS))

    base = _dt.datetime.strptime(date, "%Y_%m_%d") + _dt.timedelta(hours=10, seconds=60 * (drive_id % 600))
    stamps = [_timestamp_str(base, t) for t in times]
    for cam in ("image_02", "image_03"):
        _write_lines(drive_dir / cam / "timestamps.txt", stamps)
    _write_lines(drive_dir / "oxts" / "timestamps.txt", stamps)
    _write_lines(drive_dir / "velodyne_points" / "timestamps.txt", stamps)
    _write_lines(drive_dir / "velodyne_points" / "timestamps_start.txt",
                 [_timestamp_str(base, t - 0.05) for t in times])
    _write_lines(drive_dir / "velodyne_points" / "timestamps_end.txt",
                 [_timestamp_str(base, t + 0.05) for t in times])

    meta = {
        "seed": seed, "speed": float(speed), "lead_car": bool(lead_car), "frames": frames,
        "width": width, "height": height, "drive_id": drive_id, "date": date,
        "times": [float(t) for t in times], "K": K.tolist(), "baseline": rig.baseline,
        "lead_gap": float(scene.movers[0].gap) if lead_car else None,
        "oxts_origin": origin,
        "note": "poses are in the scene frame: x along the road, y left, z up; T_world_* maps sensor -> world",
        "T_world_cam02": [p.tolist() for p in poses_cam],
        "T_world_velo": [p.tolist() for p in poses_velo],
        "T_world_imu": [p.tolist() for p in poses_imu],
    }
    (drive_dir / "scene.json").write_text(json.dumps(meta, indent=1))
    return drive_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Generate a synthetic urban drive in KITTI raw layout.")
    ap.add_argument("--out", required=True, help="output root (the date directory is created inside)")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--lead-car", action="store_true", help="a car ahead at constant gap, at ego speed")
    ap.add_argument("--speed", type=float, default=10.0, help="ego speed (m/s)")
    ap.add_argument("--drive-id", type=int, default=None)
    ap.add_argument("--date", default="2030_01_01")
    a = ap.parse_args(argv)
    try:
        d = generate_drive(a.out, a.frames, a.seed, a.width, a.height, a.lead_car, a.speed, a.drive_id, a.date)
    except ValueError as e:
        ap.error(str(e))
    print(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
