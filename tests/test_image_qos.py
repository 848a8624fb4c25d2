"""Camera-sized images between two processes: the shipped Fast DDS profile (config/fastdds_large_images.xml) and
benchmarks/image_qos.py's publisher/subscriber pair over real DDS (localhost, a random ROS domain per run)."""
from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from benchmarks import image_qos as Q

FRAME_1080P = 1920 * 1080 * 3


def _local(el) -> str:
    return el.tag.split("}")[-1]


def _children(el) -> dict:
    return {_local(c): c for c in el}


def test_profile_is_well_formed_and_configures_shm_and_udp():
    root = ET.parse(Q.PROFILE).getroot()
    assert _local(root) == "dds" and root.tag.startswith("{http://www.eprosima.com}")
    (profiles,) = [c for c in root if _local(c) == "profiles"]
    descs = {}
    for d in profiles.iter():
        if _local(d) == "transport_descriptor":
            f = {k: (v.text or "").strip() for k, v in _children(d).items()}
            descs[f["transport_id"]] = f
    shm = [f for f in descs.values() if f["type"] == "SHM"]
    udp = [f for f in descs.values() if f["type"] == "UDPv4"]
    assert len(shm) == 1 and len(udp) == 1, descs
    # at least the keep-last-5 sensor-data history of 1920x1080 rgb8 frames fits in the segment
    assert int(shm[0]["segment_size"]) >= 5 * FRAME_1080P
    assert int(udp[0]["sendBufferSize"]) >= 4 * 2**20 and int(udp[0]["receiveBufferSize"]) >= 4 * 2**20
    (part,) = [p for p in profiles if _local(p) == "participant"]
    assert part.get("is_default_profile") == "true"  # applied to every participant without code changes
    rtps = _children(part)["rtps"]
    assert _children(rtps)["useBuiltinTransports"].text.strip() == "false"
    used = [t.text.strip() for t in _children(rtps)["userTransports"] if _local(t) == "transport_id"]
    assert used == [shm[0]["transport_id"], udp[0]["transport_id"]]  # SHM first: it carries same-host data
    assert Q.profile_segment_size(Q.PROFILE) == int(shm[0]["segment_size"])


def test_profile_segment_size_only_counts_a_used_shm_transport(tmp_path):
    src = Q.PROFILE.read_text()
    udp_only = tmp_path / "udp_only.xml"
    udp_only.write_text(src.replace("<transport_id>semdepth_shm</transport_id>\n          <transport_id>semdepth_udp",
                                    "<transport_id>semdepth_udp"))
    assert Q.profile_segment_size(udp_only) is None
    broken = tmp_path / "broken.xml"
    broken.write_text(src.replace("</profiles>", ""))
    with pytest.raises(ET.ParseError):
        Q.profile_segment_size(broken)


@pytest.mark.ros
@pytest.mark.parametrize("setting", ["best_effort+profile", "best_available+profile"])
def test_two_processes_receive_1242x375_at_10hz_with_the_profile(setting, tmp_path):
    """The shipped profile in both processes: a best-effort publisher and subscriber (a sensor-data camera driver; 0-3 %
    of the frames arrive without the profile) and the node's recommended BEST_AVAILABLE subscription to a reliable
    publisher. run_cell itself fails unless both processes map the profile's SHM segment without XML errors."""
    pytest.importorskip("rclpy")
    pytest.importorskip("sensor_msgs.msg")
    row = Q.run_cell(1242, 375, 10.0, setting, 3.0, random.randint(1, 200), Q.PROFILE, tmp_path)
    assert row["sent"] == 30 and row["bytes_per_frame"] == 1242 * 375 * 3
    assert row["recv_frac"] >= 0.8, row
    assert row["lat_ms_mean"] < 200, row
    want = Q.profile_segment_size(Q.PROFILE)
    assert max(row["pub_shm_segments"].values()) >= want and max(row["sub_shm_segments"].values()) >= want
