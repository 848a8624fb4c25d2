"""data.kind rosbag (semdepth_ros/bag_dataset.py): rosbag2 recordings as self-supervised training data.

Covers: the KITTI drive 0001 converted with kitti_to_bag gives the same samples as the folder (images,
intrinsics, context, speed, dt), also from jpeg CompressedImage and sqlite3; a few training steps from a
bag (DataLoader workers) write a checkpoint the predictor loads; time-based context, static-frame and
time-gap dropping, the train/val time split, odometry matching, stereo; bad bags give clear errors or
counted skips; a hypothesis fuzz of the image decoding.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semdepth_core.config import BagConfig, load_config
from semdepth_ros import kitti_to_bag as k2b
from semdepth_ros.bag_dataset import (
    BagDataError,
    build_bag_datasets,
    decode_image,
    find_bags,
    sibling_topic,
    typestore,
)

KITTI_IMAGE = "/kitti/camera_color_left/image_raw"
KITTI_ODOM = "/kitti/oxts/odom"
DRIVE = "2011_09_26_drive_0001_sync"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path_factory, monkeypatch):
    """Bag indexes are cached under $SEMDEPTH_CACHE: a fresh folder per test, never the user's cache."""
    monkeypatch.setenv("SEMDEPTH_CACHE", str(tmp_path_factory.mktemp("cache")))


def kitti_settings(**kw) -> BagConfig:
    return BagConfig(image_topic=KITTI_IMAGE, odom_topic=KITTI_ODOM, **kw)


@pytest.fixture(scope="module")
def kitti_bags(kitti_drive_dir, tmp_path_factory) -> dict[str, Path]:
    """Drive 0001 (8 frames) as a raw-image mcap bag, a jpeg CompressedImage sqlite3 bag (in one folder)
    and a png (lossless) CompressedImage mcap bag."""
    d = tmp_path_factory.mktemp("bags")
    quiet = lambda m: None  # noqa: E731
    k2b.convert(kitti_drive_dir, d / "raw", storage="mcap", log=quiet)
    k2b.convert(kitti_drive_dir, d / "jpeg", storage="sqlite3", log=quiet, image_format="jpeg", jpeg_quality=95)
    k2b.convert(kitti_drive_dir, d.parent / f"{d.name}_png", storage="mcap", log=quiet, image_format="png")
    return {"raw": d / "raw", "jpeg": d / "jpeg", "png": d.parent / f"{d.name}_png", "folder": d}


# ------------------------------------------------------------------------------------------ synthetic bags
def write_bag(path: Path, stamps_s, *, images=None, size=(48, 32), speeds=None, odom_stamps_s=None,
              odom_type="geometry_msgs/msg/TwistStamped", encoding="rgb8", distortion=(0.0,) * 5,
              with_info=True, image_topic="/camera/image_raw", stereo=False, bad_cdr_at=(), storage="mcap",
              tf_static=(), garbage=b"\x00\x01\x00\x00garbage"):
    """A small rosbag2 written with rosbags: rgb8 images (a moving pattern unless `images`), CameraInfo,
    optional odometry (speeds at odom_stamps_s, default the image stamps), a second camera (frame "right")
    and /tf_static transforms (parent, child, xyz, quaternion xyzw); the images at `bad_cdr_at` are `garbage` bytes."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    T = ts.types
    w, h = size

    def header(t, frame="cam"):
        ns = int(round(t * 1e9))
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                        frame_id=frame)

    def image(t, rgb, frame):
        return T["sensor_msgs/msg/Image"](header=header(t, frame), height=h, width=w, encoding=encoding,
                                          is_bigendian=0, step=3 * w,
                                          data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))

    def info(t, frame):
        K = np.array([[40.0, 0, w / 2], [0, 40.0, h / 2], [0, 0, 1]])
        return T["sensor_msgs/msg/CameraInfo"](
            header=header(t, frame), height=h, width=w, distortion_model="plumb_bob", d=np.asarray(distortion, float),
            k=K.reshape(-1), r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
            binning_x=0, binning_y=0,
            roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def odom(t, v):
        V3 = T["geometry_msgs/msg/Vector3"]
        twist = T["geometry_msgs/msg/Twist"](linear=V3(x=float(v), y=0.0, z=0.0), angular=V3(x=0.0, y=0.0, z=0.0))
        if odom_type == "geometry_msgs/msg/TwistStamped":
            return T[odom_type](header=header(t), twist=twist)
        pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                           orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        return T[odom_type](header=header(t), child_frame_id="base_link",
                            pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
                            twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, 4 * w, 3), dtype=np.uint8)
    if images is None:
        images = [np.ascontiguousarray(base[:, int(4 * t * 10) % (3 * w):][:, :w]) for t in stamps_s]
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.open()
    ns_of = lambda t: int(round(t * 1e9))  # noqa: E731
    events = []
    cam_topics = [(image_topic, sibling_topic(image_topic, "camera_info"), "cam")]
    if stereo:
        cam_topics.append(("/right/image_raw", "/right/camera_info", "right"))
    conns = {}
    if tf_static:
        V3, Q = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Quaternion"]
        msg = T["tf2_msgs/msg/TFMessage"](transforms=[
            T["geometry_msgs/msg/TransformStamped"](
                header=header(stamps_s[0], parent), child_frame_id=child,
                transform=T["geometry_msgs/msg/Transform"](translation=V3(x=xyz[0], y=xyz[1], z=xyz[2]),
                                                           rotation=Q(x=q[0], y=q[1], z=q[2], w=q[3])))
            for parent, child, xyz, q in tf_static])
        conns["/tf_static"] = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
        events.append((ns_of(stamps_s[0]), "/tf_static", ts.serialize_cdr(msg, "tf2_msgs/msg/TFMessage")))
    for img_topic, info_topic, frame in cam_topics:
        conns[img_topic] = writer.add_connection(img_topic, "sensor_msgs/msg/Image", typestore=ts)
        if with_info:
            conns[info_topic] = writer.add_connection(info_topic, "sensor_msgs/msg/CameraInfo", typestore=ts)
        for k, (t, rgb) in enumerate(zip(stamps_s, images)):
            raw = (garbage if k in bad_cdr_at
                   else ts.serialize_cdr(image(t, rgb, frame), "sensor_msgs/msg/Image"))
            events.append((ns_of(t), img_topic, raw))
            if with_info:
                events.append((ns_of(t), info_topic, ts.serialize_cdr(info(t, frame), "sensor_msgs/msg/CameraInfo")))
    if speeds is not None:
        conns["/odom"] = writer.add_connection("/odom", odom_type, typestore=ts)
        for t, v in zip(stamps_s if odom_stamps_s is None else odom_stamps_s, speeds):
            events.append((ns_of(t), "/odom", ts.serialize_cdr(odom(t, v), odom_type)))
    for ns, topic, raw in sorted(events, key=lambda e: e[0]):
        writer.write(conns[topic], ns, raw)
    writer.close()
    return path


def bag_settings(**kw) -> BagConfig:
    return BagConfig(**kw)


def build(root, context=(-1, 1), stereo=False, **kw):
    return build_bag_datasets(root, bag_settings(**kw), 32, 64, list(context), stereo=stereo, log=None)


# ------------------------------------------------------------------------------------------ KITTI equivalence
def test_kitti_bag_gives_the_folder_samples(kitti_bags, kitti_root, kitti_drive_dir):
    from semdepth_core.data.dataset import KittiDataset
    from semdepth_core.data.kitti import KittiDrive
    from semdepth_core.data.splits import refs_for_root

    refs = [r for r in refs_for_root(kitti_root, (-1, 1)) if r.drive == DRIVE]
    folder = KittiDataset(kitti_root, refs=refs, height=96, width=320, context=(-1, 1), with_gt=False)
    drive = KittiDrive(kitti_drive_dir)
    for kind in ("raw", "png", "jpeg"):
        bag, _, summary = build_bag_datasets(kitti_bags[kind], kitti_settings(), 96, 320, [-1, 1], log=None)
        assert len(bag) == len(folder) == 6 and summary["train"] == 6
        assert summary["dropped"] == {"context beyond the start/end of the recording": 2}
        for i in range(len(bag)):
            s_bag, s_dir = bag.samples[i], folder.samples[i]
            # the same target and context frames (chosen by time in the bag, by index in the folder)
            assert s_bag.frame == s_dir.frame
            assert abs(s_bag.seq.timestamp(s_bag.frame) - drive.timestamp(s_dir.frame)) < 1e-6
            assert bag.context_frames(s_bag) == folder.context_frames(s_dir)
            for flip in (False, True):
                a, b = bag.load(i, flip=flip), folder.load(i, flip=flip)
                torch.testing.assert_close(a["K"], b["K"])
                torch.testing.assert_close(a["speed"], b["speed"], rtol=1e-6, atol=1e-6)
                torch.testing.assert_close(a["dt"], b["dt"], rtol=0, atol=1e-6)
                assert a["original_size"].tolist() == b["original_size"].tolist() == [1242, 375]
                for key in ("rgb", "rgb_context"):
                    if kind in ("raw", "png"):  # lossless
                        assert torch.equal(a[key], b[key]), key
                    else:  # jpeg at quality 95
                        assert (a[key] - b[key]).abs().mean() < 0.01, key
                assert set(b) - set(a) <= {"pose_gt"}  # only the OXTS pose is folder-only


def test_folder_of_bags_and_summary(kitti_bags):
    assert find_bags(kitti_bags["folder"]) == [kitti_bags["jpeg"], kitti_bags["raw"]]
    train, val, summary = build_bag_datasets(kitti_bags["folder"], kitti_settings(val_fraction=0.4), 32, 64,
                                             [-1, 1], log=None)
    names = {s.name for s in train.samples}
    assert any(n.startswith("rosbag/raw/") for n in names) and any(n.startswith("rosbag/jpeg/") for n in names)
    assert [b["image_type"] for b in summary["bags"]] == ["sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image"]
    assert summary["train"] == len(train) and summary["val"] == len(val)
    for b in summary["bags"]:  # every image is kept (train or val) or dropped with a reason
        assert b["train"] + b["val"] + sum(b["dropped"].values()) == b["images"] == 8
        assert b["val"] >= 1 and b["dropped"].get("context crosses the train/val time boundary", 0) >= 1
    json.dumps(summary)


def test_bags_as_a_mixed_source_beside_the_kitti_folder(kitti_bags, kitti_root, capsys):
    from semdepth_core.config import ConfigError
    from training.data import build_mixed_datasets

    sources = (f"[{{kind: rosbag, root: '{kitti_bags['raw']}'}}, "
               f"{{kind: kitti, root: '{kitti_root}', drives: [{DRIVE}]}}]")
    cfg = load_config(None, ["data.kind=mixed", f"data.sources={sources}", "data.height=64", "data.width=192",
                             f"data.bag.image_topic={KITTI_IMAGE}", f"data.bag.odom_topic={KITTI_ODOM}"])
    train, val = build_mixed_datasets(cfg)
    assert len(train) == 12 and val is None
    assert "train rosbag" in capsys.readouterr().out
    names = {train[i]["filename"].split("/")[0] for i in range(len(train))}
    assert names == {"rosbag", "2011_09_26"}
    with pytest.raises(ConfigError, match=r"data.sources\[0\].cams"):
        load_config(None, ["data.kind=mixed", "data.sources=[{kind: rosbag, root: x, cams: [3]}]"])
    bad = load_config(None, ["data.kind=mixed", f"data.sources=[{{kind: rosbag, root: '{kitti_bags['raw']}'}}]"])
    with pytest.raises(ConfigError, match=r"data.sources\[0\]: .*no image topic /camera/image_raw"):
        build_mixed_datasets(bad)


def test_few_training_steps_from_a_bag_give_a_loadable_checkpoint(kitti_bags, tmp_path):
    from semdepth_core.infer import load_predictor
    from training.train import main

    out = tmp_path / "runs"
    rc = main(["--config", "training/configs/rosbag.yaml", "--set", f"data.root={kitti_bags['jpeg']}",
               "--set", f"data.bag.image_topic={KITTI_IMAGE}", "--set", f"data.bag.odom_topic={KITTI_ODOM}",
               "--set", "data.height=64", "--set", "data.width=192", "--set", "data.batch_size=2",
               "--set", "data.num_workers=2", "--set", "model.depth_net=mobilenetv2",
               "--set", "model.pose_encoder=basic", "--set", "model.pose_pretrained=",
               "--set", "train.max_steps=2", "--set", f"train.out_dir={out}", "--set", "train.tensorboard=false",
               "--set", "train.num_threads=1"])
    assert rc == 0
    run = out / "rosbag"
    summary = json.loads((run / "bag_summary.json").read_text())
    assert summary["train"] == 6 and summary["bags"][0]["odom_topic"] == KITTI_ODOM
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "total" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(np.isfinite(r["total"]) for r in steps)
    assert steps[0]["velocity"] > 0  # the bag's odometry supervises the scale
    pred = load_predictor(run / "last.ckpt", backend="torch")
    out_pred = pred.predict(np.zeros((375, 1242, 3), np.uint8))
    assert out_pred.depth.shape == (375, 1242) and np.isfinite(out_pred.depth).all()


def test_training_cli_reports_a_bad_bag_clearly(tmp_path, capsys):
    from training.train import main

    bag = write_bag(tmp_path / "b", [0.1 * i for i in range(5)])
    rc = main(["--config", "training/configs/rosbag.yaml", "--set", f"data.root={bag}",
               "--set", "data.bag.image_topic=/nope/image_raw", "--set", f"train.out_dir={tmp_path / 'runs'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "/nope/image_raw" in err and str(bag) in err and "/camera/image_raw (sensor_msgs/msg/Image)" in err
    rc = main(["--config", "training/configs/rosbag.yaml", "--set", f"train.out_dir={tmp_path / 'runs'}"])
    assert rc == 2 and "data.root" in capsys.readouterr().err


def test_kitti_to_bag_writes_compressed_images(kitti_bags, kitti_drive_dir):
    from rosbags.rosbag2 import Reader

    from semdepth_core.data.kitti import KittiDrive

    with Reader(kitti_bags["jpeg"]) as r:
        topics = {c.topic: c.msgtype for c in r.connections}
        assert topics[KITTI_IMAGE + "/compressed"] == "sensor_msgs/msg/CompressedImage"
        assert KITTI_IMAGE not in topics  # one image stream, as a camera with image_transport compressed
        conn = [c for c in r.connections if c.topic.endswith("/compressed")]
        msgs = [typestore().deserialize_cdr(raw, c.msgtype) for c, _, raw in r.messages(connections=conn)]
    assert len(msgs) == 8 and msgs[0].format == "bgr8; jpeg compressed bgr8"
    rgb = decode_image(msgs[0], "sensor_msgs/msg/CompressedImage", "test")
    ref = KittiDrive(kitti_drive_dir).load_image(0)
    assert rgb.shape == ref.shape and np.abs(rgb.astype(int) - ref).mean() < 8.0  # jpeg q95, 4:2:0 chroma
    with pytest.raises(k2b.ConversionError, match="image-format"):
        k2b.convert(kitti_drive_dir, kitti_bags["folder"] / "x", image_format="bmp", log=lambda m: None)


# ------------------------------------------------------------------------------------------ sampling
def test_context_by_time_with_jitter_and_a_gap(tmp_path):
    rng = np.random.default_rng(1)
    stamps = [0.1 * i + rng.uniform(-0.01, 0.01) for i in range(12) if i != 6]  # frame 6 was lost
    write_bag(tmp_path / "b", stamps)
    train, _, summary = build(tmp_path / "b", static_filter="none")
    b = summary["bags"][0]
    assert b["time_gaps"] == 1 and abs(b["frame_period_s"] - 0.1) < 0.02
    # targets 5 and 7 (bag indices 5 and 6) lack a context frame across the gap; 0 and 11 are at the edges
    assert b["dropped"] == {"context beyond the start/end of the recording": 2,
                            "no context image within 0.3 frame periods (time gap)": 2}
    assert [s.frame for s in train.samples] == [1, 2, 3, 4, 7, 8, 9]
    for s in train.samples:
        ctx = train.context_frames(s)
        assert ctx == [s.frame - 1, s.frame + 1]
        item = train.load(train.samples.index(s))
        assert torch.allclose(item["dt"], torch.tensor([stamps[s.frame] - stamps[s.frame - 1],
                                                        stamps[s.frame + 1] - stamps[s.frame]]).float(), atol=1e-6)
    # a context of [-2, 2] is picked by time: across the lost frame it is not 2 bag messages away
    bag_stamps = np.array(stamps)
    train2, _, _ = build(tmp_path / "b", context=(-2, 2), static_filter="none")
    # bag index -> original frame: 0-5 -> 0-5, 6-10 -> 7-11; originals 4 and 8 would need the lost 6
    assert [s.frame for s in train2.samples] == [2, 3, 5, 6, 8]
    for s in train2.samples:
        ctx = train2.context_frames(s)
        assert np.allclose(bag_stamps[ctx] - bag_stamps[s.frame], [-0.2, 0.2], atol=0.03)
    assert train2.context_frames(train2.samples[2]) == [3, 6]  # original frames 3 and 7 around original 5


def test_static_frames_dropped_by_odometry_speed_and_by_image_difference(tmp_path):
    stamps = [0.1 * i for i in range(10)]
    speeds = [5.0, 5.0, 5.0, 0.0, 0.1, 0.0, 5.0, 5.0, 5.0, 5.0]
    write_bag(tmp_path / "odom", stamps, speeds=speeds, odom_type="nav_msgs/msg/Odometry")
    train, _, summary = build(tmp_path / "odom", odom_topic="/odom")
    assert summary["dropped"]["static: odometry speed < 0.3 m/s"] == 3
    assert [s.frame for s in train.samples] == [1, 2, 6, 7, 8]
    assert train.load(0)["speed"].item() == pytest.approx(5.0)

    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(10)]
    frames[4] = frames[3].copy()  # the camera stood still between frames 3 and 5
    frames[5] = frames[3].copy()
    write_bag(tmp_path / "img", stamps, images=frames)
    train, _, summary = build(tmp_path / "img")  # auto: no odometry -> image difference
    assert summary["dropped"]["static: image change < 1 grey levels"] == 2
    assert [s.frame for s in train.samples] == [1, 2, 3, 6, 7, 8]
    train, _, _ = build(tmp_path / "img", static_filter="none")
    assert len(train) == 8


def test_odometry_matching_and_too_far_odometry(tmp_path):
    stamps = [0.1 * i for i in range(10)]
    # TwistStamped only for the first half of the recording, 20 ms after each image
    write_bag(tmp_path / "b", stamps, speeds=[2.0 + i for i in range(5)], odom_stamps_s=[t + 0.02 for t in stamps[:5]])
    train, _, summary = build(tmp_path / "b", odom_topic="/odom")
    assert summary["dropped"]["no odometry within 0.05 s of the image stamp"] == 4  # frames 5..8 (9 is an edge)
    assert [s.frame for s in train.samples] == [1, 2, 3, 4]
    assert [train.load(i)["speed"].item() for i in range(4)] == pytest.approx([3.0, 4.0, 5.0, 6.0])
    with pytest.raises(BagDataError, match=r"no training targets .*no odometry within 0.01 s"):
        build(tmp_path / "b", odom_topic="/odom", odom_tolerance=0.01)  # every odometry message is 20 ms off


def test_val_split_by_time(tmp_path):
    stamps = [0.1 * i for i in range(20)]
    write_bag(tmp_path / "b", stamps)
    train, val, summary = build(tmp_path / "b", static_filter="none", val_fraction=0.25)
    boundary = summary["bags"][0]["val_start_s"]
    assert boundary == pytest.approx(0.75 * 1.9)
    assert max(stamps[f] for s in train.samples for f in (s.frame, *train.context_frames(s))) < boundary
    assert min(stamps[s.frame] for s in val.samples) >= boundary
    assert summary["dropped"]["context crosses the train/val time boundary"] == 2
    assert len(train) + len(val) + sum(summary["dropped"].values()) == 20
    assert "rgb_context" in val.load(0) and val.load(0)["rgb_context"].shape[0] == 0  # validation: no context


def test_stereo_pair_from_a_second_camera(tmp_path):
    write_bag(tmp_path / "b", [0.1 * i for i in range(6)], stereo=True)
    train, _, _ = build(tmp_path / "b", static_filter="none", stereo=True,
                        stereo_image_topic="/right/image_raw", stereo_baseline=0.3)
    item = train.load(0)
    assert item["rgb_stereo"].shape == (3, 32, 64)
    assert torch.allclose(item["T_stereo"][:3, 3], torch.tensor([-0.3, 0.0, 0.0]))
    flipped = train.load(0, flip=True)
    assert torch.allclose(flipped["T_stereo"][:3, 3], torch.tensor([0.3, 0.0, 0.0]))
    cfg = load_config("training/configs/rosbag.yaml", ["data.stereo=true", "data.bag.stereo_image_topic=/r/image_raw"])
    assert cfg.data.stereo
    with pytest.raises(ValueError, match="stereo_image_topic"):
        load_config("training/configs/rosbag.yaml", ["data.stereo=true"])
    with pytest.raises(ValueError, match="data.bag.static_filter: odometry needs data.bag.odom_topic"):
        load_config("training/configs/rosbag.yaml", ["data.bag.odom_topic=", "data.bag.static_filter=odometry"])
    with pytest.raises(ValueError, match="data.bag.static_filter"):
        load_config("training/configs/rosbag.yaml", ["data.bag.static_filter=sometimes"])


def test_stereo_extrinsic_from_tf_static(tmp_path):
    ident = (0.0, 0.0, 0.0, 1.0)
    # base -> cam and base -> rig -> right: the right camera 0.25 m to the right of cam (optical x), 1 cm lower
    write_bag(tmp_path / "tf", [0.1 * i for i in range(6)], stereo=True,
              tf_static=[("base", "cam", (1.0, 0.0, 1.5), ident), ("base", "rig", (1.0, 0.1, 1.5), ident),
                         ("rig", "right", (0.25, -0.1, 0.01), ident)])
    train, _, _ = build(tmp_path / "tf", static_filter="none", stereo=True, stereo_image_topic="/right/image_raw")
    T = train.load(0)["T_stereo"]
    assert torch.allclose(T[:3, 3], torch.tensor([-0.25, 0.0, -0.01]), atol=1e-6)
    assert torch.allclose(T[:3, :3], torch.eye(3))
    write_bag(tmp_path / "notf", [0.1 * i for i in range(6)], stereo=True)
    with pytest.raises(BagDataError, match=r"notf: /tf_static does not connect the camera frames 'cam' and 'right'"):
        build(tmp_path / "notf", static_filter="none", stereo=True, stereo_image_topic="/right/image_raw")
    s = np.sin(np.radians(5) / 2)
    write_bag(tmp_path / "rot", [0.1 * i for i in range(6)], stereo=True,
              tf_static=[("cam", "right", (0.25, 0.0, 0.0), (0.0, s, 0.0, np.sqrt(1 - s * s)))])
    with pytest.raises(BagDataError, match=r"rotates 'right' by 5.00 degrees .*rectified pair"):
        build(tmp_path / "rot", static_filter="none", stereo=True, stereo_image_topic="/right/image_raw")


def test_lazy_reads_per_worker_and_pickling(tmp_path):
    write_bag(tmp_path / "b", [0.1 * i for i in range(8)], storage="sqlite3")
    train, _, _ = build(tmp_path / "b", static_filter="none")
    seq = train.samples[0].seq
    assert seq._reader is None  # nothing read after indexing
    first = train.load(2)
    clone = pickle.loads(pickle.dumps(train))  # what a spawned DataLoader worker receives
    assert clone.samples[0].seq._reader is None
    assert torch.equal(clone.load(2)["rgb"], first["rgb"])
    from semdepth_core.data.dataset import collate

    loader = torch.utils.data.DataLoader(train, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(b["rgb"].shape[0] for b in batches) == len(train)
    assert torch.equal(batches[1]["rgb"][0], first["rgb"])


def test_index_is_cached_on_disk_and_invalidated_by_a_changed_bag(tmp_path, monkeypatch):
    from semdepth_ros import bag_dataset

    stamps = [0.1 * i for i in range(8)]
    write_bag(tmp_path / "b", stamps, speeds=[3.0] * 8)
    first, _, summary = build(tmp_path / "b", odom_topic="/odom")
    assert len(list(bag_dataset.index_cache_dir().glob("*.npz"))) == 1

    def no_pass(*a, **k):
        raise AssertionError("the bag was read again")

    read_bag = bag_dataset._index_bag_uncached
    monkeypatch.setattr(bag_dataset, "_index_bag_uncached", no_pass)
    again, _, summary2 = build(tmp_path / "b", odom_topic="/odom")  # from the cache
    assert summary2 == summary and [s.frame for s in again.samples] == [s.frame for s in first.samples]
    assert torch.equal(again.load(1)["rgb"], first.load(1)["rgb"]) and again.load(1)["speed"] == 3.0
    with pytest.raises(AssertionError, match="read again"):  # other topic settings: another index
        build(tmp_path / "b", odom_topic="")
    import shutil

    shutil.rmtree(tmp_path / "b")
    write_bag(tmp_path / "b", stamps[:6], speeds=[3.0] * 6)  # the recording changed
    with pytest.raises(AssertionError, match="read again"):
        build(tmp_path / "b", odom_topic="/odom")
    monkeypatch.setattr(bag_dataset, "_index_bag_uncached", read_bag)
    assert len(build(tmp_path / "b", index_cache=False)[0]) == 4
    assert len(list(bag_dataset.index_cache_dir().glob("*.npz"))) == 1  # index_cache false writes nothing


# ------------------------------------------------------------------------------------------ bad input
def test_missing_topics_and_distortion_are_clear_errors(tmp_path):
    stamps = [0.1 * i for i in range(5)]
    write_bag(tmp_path / "noinfo", stamps, with_info=False)
    with pytest.raises(BagDataError, match=r"noinfo: no camera_info topic /camera/camera_info"):
        build(tmp_path / "noinfo")
    with pytest.raises(BagDataError, match=r"no image topic /other/image_raw .*/other/image_raw/compressed"):
        build(tmp_path / "noinfo", image_topic="/other/image_raw")
    write_bag(tmp_path / "dist", stamps, distortion=(0.1, 0.0, 0.0, 0.0, 0.0))
    with pytest.raises(BagDataError, match=r"dist: /camera/camera_info: CameraInfo has distortion .*rectified"):
        build(tmp_path / "dist")
    write_bag(tmp_path / "nood", stamps)
    with pytest.raises(BagDataError, match=r"no odometry topic /odom"):
        build(tmp_path / "nood", odom_topic="/odom")
    with pytest.raises(BagDataError, match="does not exist"):
        find_bags(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagDataError, match="no rosbag2 folder"):
        find_bags(tmp_path / "empty")


def test_unknown_encoding_and_corrupt_messages_are_counted_or_refused(tmp_path):
    stamps = [0.1 * i for i in range(8)]
    write_bag(tmp_path / "yuv", stamps, encoding="yuv422_weird")
    with pytest.raises(BagDataError, match=r"yuv: no decodable image on /camera/image_raw .*8 undecodable image"):
        build(tmp_path / "yuv")
    write_bag(tmp_path / "cdr", stamps, bad_cdr_at=(3,))
    train, _, summary = build(tmp_path / "cdr", static_filter="none")
    assert summary["dropped"]["undecodable sensor_msgs/msg/Image message on /camera/image_raw"] == 1
    assert "/camera/image_raw message at t=" in summary["bags"][0]["examples"][
        "undecodable sensor_msgs/msg/Image message on /camera/image_raw"]
    assert len(train) == 3  # 7 images left: the 2 edges and the 2 neighbours of the lost one are dropped
    for i in range(len(train)):
        train.load(i)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_or_corrupt_bag_files_are_clear_errors(tmp_path, storage):
    bag = write_bag(tmp_path / "b", [0.1 * i for i in range(30)], size=(160, 96), storage=storage)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    raw = data_file.read_bytes()
    data_file.write_bytes(raw[: len(raw) // 2])  # truncated mid-recording
    with pytest.raises(BagDataError, match=str(bag)):
        build(bag, static_filter="none")
    data_file.write_bytes(raw[:64] + bytes(len(raw) - 64))  # zeroed
    with pytest.raises(BagDataError, match=str(bag)):
        build(bag, static_filter="none")
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagDataError, match="no rosbag2 folder"):
        build(bag)


# ------------------------------------------------------------------------------------------ fuzz
_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "16UC1", "yuv422", "", "32FC1"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(0, 6), w=st.integers(0, 6), enc=st.sampled_from(_ENCODINGS), step=st.integers(0, 40),
       big=st.integers(0, 1), data=st.binary(max_size=200))
def test_fuzz_raw_image_decoding(h, w, enc, step, big, data):
    msg = SimpleNamespace(height=h, width=w, encoding=enc, step=step, is_bigendian=big,
                          data=np.frombuffer(data, np.uint8))
    try:
        rgb = decode_image(msg, "sensor_msgs/msg/Image", "fuzz")
    except BagDataError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3)


@settings(max_examples=100, deadline=None)
@given(fmt=st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8", "tiff", "", "16UC1; compressedDepth"]),
       data=st.binary(max_size=300), valid=st.booleans())
def test_fuzz_compressed_image_decoding(fmt, data, valid):
    import cv2

    if valid:  # a real image with bytes appended / cut
        ok, enc = cv2.imencode(".png", np.full((4, 5, 3), 7, np.uint8))
        data = enc.tobytes()[: max(1, len(data))] if len(data) % 2 else enc.tobytes() + data
    msg = SimpleNamespace(format=fmt, data=np.frombuffer(data, np.uint8))
    try:
        rgb = decode_image(msg, "sensor_msgs/msg/CompressedImage", "fuzz")
    except BagDataError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(min_size=0, max_size=120), at=st.integers(0, 5))
def test_fuzz_a_garbage_message_in_a_bag_is_counted(garbage, at):
    """Arbitrary bytes as one recorded Image message: counted as undecodable (or decoded), never a crash."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        bag = write_bag(Path(d) / "b", [0.1 * i for i in range(6)], bad_cdr_at=(at,), garbage=garbage)
        try:
            train, _, summary = build(bag, static_filter="none", index_cache=False)
        except BagDataError as exc:  # e.g. the garbage decoded to an image of another size
            assert str(bag) in str(exc)
            return
        assert summary["bags"][0]["images"] + sum(summary["dropped"].values()) >= 6
        for i in range(len(train)):
            train.load(i)


def test_throughput_benchmark_arguments():
    from benchmarks import bag_throughput as bt

    a = bt.parse_args([])
    assert not a.quick and a.workers == 2 and (a.width, a.height) == (640, 192) and a.drive == ""
    assert bt.parse_args(["--quick", "--workers", "1"]).quick
