"""The package is a real ament_python package: layout, package.xml, setup.py data files, no ROS in core."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    """{module path: top-level names it imports} for every .py file under REPO/package."""
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = names
    return out


def test_layers_core_below_product_below_benchmarks_below_experiments():
    """semdepth_core imports neither the node nor training; the product never imports benchmarks or the
    research probes; benchmarks never import the probes."""
    upper = {"benchmarks", "experiments"}
    for package in ("semdepth_core", "semdepth_ros", "training"):
        for path, names in _imported_top_levels(package).items():
            assert not names & upper, f"{path} imports {sorted(names & upper)}"
    for path, names in _imported_top_levels("benchmarks").items():
        assert "experiments" not in names, path
    for path, names in _imported_top_levels("semdepth_core").items():
        assert not names & {"semdepth_ros", "training"}, path


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
