"""The package is a real ament_python package: layout, package.xml, setup.py data files, no ROS in core."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_top_level_layout():
    for name in ["semdepth_core", "semdepth_ros", "launch", "training", "tests", "package.xml", "setup.py",
                 "README.md", "config", "benchmarks", "resource/semdepth_ros", "Makefile", ".ci/run"]:
        assert (REPO / name).exists(), name


def test_package_xml_format3_with_real_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.attrib["format"] == "3"
    assert root.findtext("name") == "semdepth_ros"
    deps = {e.text for e in root.findall("exec_depend")}
    for dep in ["rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "diagnostic_msgs",
                "python3-numpy", "python3-opencv", "launch_ros"]:
        assert dep in deps, dep
    assert root.find("export/build_type").text == "ament_python"


def test_setup_py_declares_ament_data_files_and_entry_points():
    src = (REPO / "setup.py").read_text()
    tree = ast.parse(src)
    assert "share/ament_index/resource_index/packages" in src
    for glob_ in ["launch/*.launch.py", "config/*.yaml"]:
        assert glob_ in src
    assert re.search(r"depth_node\s*=\s*semdepth_ros\.node:main", src)
    assert '"torch==2.13.0"' in src  # the pinned CPU wheel, never an unpinned torch
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    assert "setup" in names


def test_core_never_imports_ros():
    offenders = []
    for path in (REPO / "semdepth_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                if top in {"rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "diagnostic_msgs",
                           "semdepth_ros", "rosbags", "launch", "launch_ros"}:
                    offenders.append(f"{path.relative_to(REPO)}: {m}")
    assert not offenders, offenders


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci/run").read_text()
    readme = (REPO / "README.md").read_text()
    head = readme[:1500]
    assert "make demo" in head and "make test" in head
