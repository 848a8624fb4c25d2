"""README: the parameter table matches the node's code, and every command in it runs as written
(dry-run: `make -n`, or the module's --help with every flag the README uses; ROS CLI commands that
cannot be installed here are checked against the files they use)."""
from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _commands() -> list[str]:
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                cmds.extend(part.strip() for part in line.split("&&"))
    return cmds


COMMANDS = _commands()


@functools.lru_cache(maxsize=None)
def _help(module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=180)


def test_parameter_table_matches_the_node():
    from semdepth_ros.node import PARAMS

    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", README, re.M))
    names = {p.name for p in PARAMS}
    assert names <= set(rows), f"missing from README: {sorted(names - set(rows))}"
    for p in PARAMS:
        shown = rows[p.name]
        expected = '""' if p.default == "" else str(p.default)
        assert shown == expected, f"{p.name}: README says {shown}, code says {expected}"


def test_readme_has_the_two_commands_first():
    assert COMMANDS[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[:60])
def test_command_runs_as_written(cmd, tmp_path):
    argv = shlex.split(cmd)
    if argv[0] == "make":
        r = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return
    if argv[0].endswith("python") and argv[1] == "-m":
        module, args = argv[2], argv[3:]
        if module == "semdepth_ros.node":  # a ROS node (no --help): its arguments are ROS arguments
            import importlib

            assert callable(importlib.import_module(module).main)
            assert args[0] == "--ros-args"
            for path in [a for a in args if a.endswith((".yaml", ".ckpt"))]:
                assert (REPO / path.split(":=")[-1]).is_file(), path
            return
        r = _help(module)
        assert r.returncode == 0, f"{module} --help failed: {r.stderr[-2000:]}"
        flags = [a.split("=")[0] for a in args if a.startswith("--")]
        for flag in flags:
            assert flag in r.stdout, f"{module}: README uses {flag}, which --help does not list"
        for value in args:  # repository files the command names must exist
            if value.startswith(("training/", "config/", "semdepth_ros/weights/", "../shared/")):
                assert (REPO / value).exists(), value
        return
    if argv[0] == "ros2":  # ros2cli/launch_ros are not installable here: check what the command names
        assert argv[1:3] == ["launch", "semdepth_ros"] and (REPO / "launch" / argv[3]).is_file()
        launch = (REPO / "launch" / argv[3]).read_text()
        for arg in argv[4:]:
            name = arg.split(":=")[0]
            assert f'DeclareLaunchArgument("{name}"' in launch, name
        return
    if argv[0] in ("cd", "git", "pip", "colcon", "source"):
        if argv[0] == "colcon":
            assert "--packages-select" in argv and "semdepth_ros" in argv
            assert (REPO / "package.xml").is_file() and (REPO / "setup.py").is_file()
        if argv[0] == "pip":
            assert "torch==2.13.0" in argv or "-e" in argv
        return
    pytest.fail(f"README command not covered by this test: {cmd}")
