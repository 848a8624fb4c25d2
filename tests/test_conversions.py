"""semdepth_ros.conversions: Image / CameraInfo / PointCloud2 <-> numpy."""
from __future__ import annotations

import array
import math

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from semdepth_ros import conversions as C  # noqa: E402

RNG = np.random.default_rng(0)


def _img(h, w, encoding, pixels: np.ndarray, pad=0, bigendian=False):
    """Image message with `pad` bytes of row padding filled with 0xAB."""
    rows = pixels.reshape(h, -1).view(np.uint8) if pixels.dtype.itemsize == 1 else None
    if rows is None:
        px = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
        rows = np.ascontiguousarray(px).view(np.uint8).reshape(h, -1)
    buf = np.full((h, rows.shape[1] + pad), 0xAB, np.uint8)
    buf[:, : rows.shape[1]] = rows
    m = Image()
    m.height, m.width, m.encoding, m.is_bigendian = h, w, encoding, bigendian
    m.step = buf.shape[1]
    m.data = array.array("B", buf.tobytes())
    return m


@pytest.mark.parametrize("pad", [0, 5])
def test_color_encodings_round_trip_with_padding(pad):
    rgb = RNG.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    alpha = np.full((7, 11, 1), 200, np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], -1),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], -1),
    }
    for enc, px in cases.items():
        out = C.image_msg_to_rgb(_img(7, 11, enc, np.ascontiguousarray(px), pad=pad))
        assert out.dtype == np.uint8 and out.shape == (7, 11, 3), enc
        np.testing.assert_array_equal(out, rgb, err_msg=enc)
        assert out.flags.c_contiguous and out.flags.writeable


def test_mono8_and_mono16_endianness():
    g = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    out = C.image_msg_to_rgb(_img(4, 6, "mono8", g, pad=3))
    np.testing.assert_array_equal(out, np.repeat(g[..., None], 3, axis=2))
    g16 = RNG.integers(0, 65536, (4, 6)).astype(np.uint16)
    for big in (False, True):
        out = C.image_msg_to_rgb(_img(4, 6, "mono16", g16, pad=2, bigendian=big))
        np.testing.assert_array_equal(out[..., 0], (g16 >> 8).astype(np.uint8))
        raw = C.image_msg_to_array(_img(4, 6, "mono16", g16, bigendian=big))
        np.testing.assert_array_equal(raw, g16)


def test_bad_images_raise_clear_errors():
    rgb = np.zeros((4, 5, 3), np.uint8)
    m = _img(4, 5, "rgb8", rgb)
    m.encoding = "yuv422"
    with pytest.raises(C.ImageConversionError, match="unsupported image encoding 'yuv422'"):
        C.image_msg_to_rgb(m)
    m = _img(4, 5, "rgb8", rgb)
    m.width = 0
    with pytest.raises(C.ImageConversionError, match="zero size"):
        C.image_msg_to_rgb(m)
    m = _img(4, 5, "rgb8", rgb)
    m.step = 14
    with pytest.raises(C.ImageConversionError, match="step 14 < width"):
        C.image_msg_to_rgb(m)
    m = _img(4, 5, "rgb8", rgb)
    m.data = m.data[:-1]
    with pytest.raises(C.ImageConversionError, match="truncated image data: 59 bytes < step\\*height") as ei:
        C.image_msg_to_rgb(m)
    assert ei.value.kind == "truncated"
    assert issubclass(C.ImageConversionError, ValueError)


def test_decoders_accept_bytes_and_ndarray_data():
    """rosbags dataclasses carry `data` as an ndarray; the decoder takes it as is."""
    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    m = _img(3, 4, "rgb8", rgb)

    class Plain:  # a rosbags-like dataclass with the same field names
        height, width, encoding, is_bigendian, step = 3, 4, "rgb8", 0, 12
        data = np.frombuffer(m.data, np.uint8).copy()

    np.testing.assert_array_equal(C.image_msg_to_rgb(Plain), rgb)


def test_rgb_to_image_msg_round_trip():
    rgb = RNG.integers(0, 256, (5, 9, 3), dtype=np.uint8)
    hdr = Header(frame_id="cam")
    hdr.stamp.sec, hdr.stamp.nanosec = 12, 345
    for enc in ("rgb8", "bgr8", "rgba8", "bgra8"):
        m = C.rgb_to_image_msg(rgb, hdr, enc)
        assert (m.height, m.width, m.encoding) == (5, 9, enc)
        assert m.header.frame_id == "cam" and m.header.stamp.nanosec == 345
        assert m.step == 9 * (3 if enc.endswith("r8") or enc.endswith("b8") else 4)
        np.testing.assert_array_equal(C.image_msg_to_rgb(m), rgb)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        C.rgb_to_image_msg(rgb[..., 0], hdr)


def test_depth_encodings_follow_rep117_rep118():
    d = np.array([[1.0, 2.5, np.nan], [0.0, -1.0, 70.0]], np.float32)
    m = C.depth_to_image_msg(d, Header(frame_id="c"), "32FC1")
    assert m.encoding == "32FC1" and m.step == 12
    out = C.image_msg_to_array(m)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :2], [1.0, 2.5])
    assert np.isnan(out[0, 2]) and np.isnan(out[1, 0]) and np.isnan(out[1, 1]), "invalid -> NaN"
    assert out[1, 2] == 70.0
    m16 = C.depth_to_image_msg(d, None, "16UC1")
    assert m16.encoding == "16UC1" and m16.step == 6
    mm = C.image_msg_to_array(m16)
    np.testing.assert_array_equal(mm, [[1000, 2500, 0], [0, 0, 0]])  # 70 m does not fit -> 0
    with pytest.raises(ValueError, match="32FC1"):
        C.depth_to_image_msg(d, None, "8UC1")


def test_labels_to_mono8():
    lab = np.array([[0, 18, 255], [3, 300, -1]])
    m = C.labels_to_image_msg(lab)
    assert m.encoding == "mono8"
    np.testing.assert_array_equal(C.image_msg_to_array(m), [[0, 18, 255], [3, 255, 255]])


def _caminfo(w=1242, h=375):
    ci = CameraInfo()
    ci.width, ci.height = w, h
    ci.k = [721.5, 0.0, 609.5, 0.0, 721.5, 172.8, 0.0, 0.0, 1.0]
    ci.p = [721.5, 0.0, 609.5, 44.9, 0.0, 721.5, 172.8, 0.2, 0.0, 0.0, 1.0, 0.003]
    ci.r = np.eye(3).reshape(-1).tolist()
    ci.d = [0.0] * 5
    ci.distortion_model = "plumb_bob"
    return ci


def test_camera_info_K_and_scaling_half_pixel_rule():
    ci = _caminfo()
    K = C.camera_info_to_K(ci)
    assert K.shape == (3, 3) and K[0, 0] == 721.5
    s = C.scaled_camera_info(ci, 621, 187)
    sx, sy = 621 / 1242, 187 / 375
    K2 = C.camera_info_to_K(s)
    assert math.isclose(K2[0, 0], 721.5 * sx) and math.isclose(K2[1, 1], 721.5 * sy)
    assert math.isclose(K2[0, 2], (609.5 + 0.5) * sx - 0.5)
    assert math.isclose(K2[1, 2], (172.8 + 0.5) * sy - 0.5)
    P2 = np.array(s.p).reshape(3, 4)
    assert math.isclose(P2[0, 3], 44.9 * sx) and math.isclose(P2[2, 3], 0.003)
    assert (s.width, s.height) == (621, 187) and s.distortion_model == "plumb_bob"
    # agrees with the core geometry implementation
    from semdepth_core.geometry.camera import resize_intrinsics

    np.testing.assert_allclose(K2, resize_intrinsics(K, (1242, 375), (621, 187)), rtol=1e-12)
    bad = _caminfo()
    bad.k = [0.0] * 9
    with pytest.raises(ValueError, match="no valid intrinsics"):
        C.camera_info_to_K(bad)


def _scene(h=6, w=8):
    K = np.array([[5.0, 0.0, 3.5], [0.0, 4.0, 2.5], [0, 0, 1]])
    d = RNG.uniform(1, 20, (h, w)).astype(np.float32)
    d[0, 0] = np.nan
    d[1, 2] = 0.0
    d[2, 3] = 50.0  # beyond max_range below
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lab = RNG.integers(0, 19, (h, w)).astype(np.uint8)
    lab[3, 4] = 10  # sky, excluded below
    return K, d, rgb, lab


def test_depth_to_points_backprojects_through_K():
    K, d, rgb, lab = _scene()
    pts = C.depth_to_points(d, K, rgb, lab, max_range=40.0, exclude_labels=[10])
    valid = np.isfinite(d) & (d > 0) & (d <= 40) & (lab != 10)
    assert pts.shape is None and pts.xyz.shape == (valid.sum(), 3)
    # re-projecting the points gives back their pixels
    uvw = pts.xyz.astype(np.float64) @ K.T
    uv = uvw[:, :2] / uvw[:, 2:]
    vs, us = np.nonzero(valid)
    np.testing.assert_allclose(uv, np.stack([us, vs], 1), atol=1e-4)
    np.testing.assert_allclose(pts.xyz[:, 2], d[valid])
    np.testing.assert_array_equal(pts.rgb, rgb[valid])
    np.testing.assert_array_equal(pts.labels, lab[valid])
    org = C.depth_to_points(d, K, rgb, lab, stride=2, max_range=40.0, exclude_labels=[10], organized=True)
    assert org.shape == (3, 4) and org.xyz.shape == (12, 3)
    np.testing.assert_array_equal(np.isnan(org.xyz[:, 2]), ~valid[::2, ::2].reshape(-1))


def test_pointcloud2_layout_and_round_trip():
    K, d, rgb, lab = _scene()
    pts = C.depth_to_points(d, K, rgb, lab, organized=True)
    hdr = Header(frame_id="camera_optical")
    msg = C.make_pointcloud2(hdr, pts.xyz, pts.rgb, pts.labels, organized_shape=pts.shape)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("label", 16, 6, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (6, 8, 20, 160)
    assert len(msg.data) == 6 * 8 * 20 and msg.is_dense is False
    assert msg.header.frame_id == "camera_optical"
    arr = C.pointcloud2_to_array(msg)
    assert arr.shape == (6, 8)
    xyz = np.stack([arr["x"], arr["y"], arr["z"]], -1).reshape(-1, 3)
    np.testing.assert_array_equal(xyz, pts.xyz)
    np.testing.assert_array_equal(C.unpack_rgb(arr["rgb"].reshape(-1)), rgb.reshape(-1, 3))
    # PCL packing: 0x00RRGGBB in the bits of a float32
    p = arr["rgb"].reshape(-1).view(np.uint32)
    r, g, b = rgb.reshape(-1, 3).astype(np.uint32).T
    np.testing.assert_array_equal(p, (r << 16) | (g << 8) | b)
    np.testing.assert_array_equal(arr["label"], lab)


@pytest.mark.parametrize("organized", [True, False])
@pytest.mark.parametrize("stride", [1, 3])
def test_fused_path_matches_two_step_path(organized, stride):
    K, d, rgb, lab = _scene(9, 13)
    kw = dict(stride=stride, max_range=40.0, min_range=0.5, exclude_labels=[10], organized=organized)
    pts = C.depth_to_points(d, K, rgb, lab, **kw)
    a = C.make_pointcloud2(Header(), pts.xyz, pts.rgb, pts.labels, organized_shape=pts.shape)
    b = C.depth_to_pointcloud2(Header(), d, K, rgb, lab, **kw)
    assert (a.height, a.width, a.is_dense, a.row_step) == (b.height, b.width, b.is_dense, b.row_step)
    ua = np.frombuffer(a.data, np.uint32).reshape(-1, 5)
    ub = np.frombuffer(b.data, np.uint32).reshape(-1, 5)
    fa, fb = ua[:, :3].view(np.float32), ub[:, :3].view(np.float32)
    np.testing.assert_allclose(fa, fb, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(ua[:, 3:], ub[:, 3:])


def test_reuse_refills_published_cloud_of_another_size():
    K, d, rgb, lab = _scene()
    first = C.depth_to_pointcloud2(Header(), d, K, rgb, lab, organized=False)
    n_first = first.width
    again = C.depth_to_pointcloud2(Header(frame_id="x"), d, K, rgb, lab, organized=True, reuse=first)
    assert again is first and again.header.frame_id == "x"
    assert (again.height, again.width) == (6, 8) and len(again.data) == 6 * 8 * 20 != n_first * 20
    fresh = C.depth_to_pointcloud2(Header(), d, K, rgb, lab, organized=True)
    np.testing.assert_array_equal(np.frombuffer(again.data, np.uint8), np.frombuffer(fresh.data, np.uint8))


def test_skewed_intrinsics_reproject():
    K = np.array([[5.0, 0.7, 3.5], [0.0, 4.0, 2.5], [0, 0, 1]])
    d = np.full((4, 6), 3.0, np.float32)
    pts = C.depth_to_points(d, K)
    uvw = pts.xyz.astype(np.float64) @ K.T
    vs, us = np.mgrid[0:4, 0:6]
    np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], np.stack([us.ravel(), vs.ravel()], 1), atol=1e-4)


def test_xyzi_cloud():
    pts = RNG.normal(size=(10, 4)).astype(np.float32)
    m = C.make_xyzi_pointcloud2(Header(frame_id="velo"), pts)
    a = C.pointcloud2_to_array(m)
    assert m.point_step == 16 and a.shape == (1, 10)
    np.testing.assert_array_equal(a["intensity"][0], pts[:, 3])
