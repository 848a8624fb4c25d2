"""Configs by difference: `base:` chains in the one config loader, and every shipped config loads to exactly the
effective config recorded in tests/data/effective_configs.json (written before the files were trimmed to their
differences; a deliberate change to a config's meaning updates that record with `python tests/test_config_bases.py`)."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semdepth_core.config import ConfigError, config_to_dict, load_config, load_config_data  # noqa: E402

CONFIGS = REPO / "training" / "configs"
RECORD = REPO / "tests" / "data" / "effective_configs.json"


def effective(path: Path) -> dict:
    """The loaded, validated config of one shipped file as plain data."""
    if path.stem.endswith("_semantic") or path.stem.startswith("semantic_"):  # training.train_semantic configs
        from training.train_semantic import load_train_config

        return dataclasses.asdict(load_train_config(str(path), ["data.roots=[placeholder]"]))
    return config_to_dict(load_config(path))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_loads_to_its_recorded_effective_config(path):
    record = json.loads(RECORD.read_text())
    assert path.name in record, f"{path.name} is not in {RECORD.name}; record it with python tests/test_config_bases.py"
    assert json.loads(json.dumps(effective(path))) == record[path.name]


def test_every_recorded_config_is_shipped():
    assert sorted(json.loads(RECORD.read_text())) == sorted(p.name for p in CONFIGS.glob("*.yaml"))


def test_configs_state_only_their_difference():
    """A config with a base sets no value its base already has (else it is not written by difference)."""
    import yaml

    from semdepth_core.config import read_config_file

    def leaves(d, pre=()):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from leaves(v, pre + (k,))
            else:
                yield pre + (k,), v

    based = 0
    for path in sorted(CONFIGS.glob("*.yaml")):
        own = yaml.safe_load(path.read_text())
        if "base" not in own:
            continue
        based += 1
        base = dict(leaves(read_config_file(CONFIGS / own.pop("base"))))
        same = [".".join(k) for k, v in leaves(own) if k in base and base[k] == v and k[-1] != "name"]
        assert not same, f"{path.name} repeats its base's values: {same}"
    assert based >= 10


def test_base_chain_merges_and_errors_name_the_files(tmp_path):
    (tmp_path / "root.yaml").write_text("data:\n  height: 64\n  width: 192\n  context: [-1, 1]\nloss:\n  ssim_alpha: 0.5\n")
    (tmp_path / "mid.yaml").write_text("base: root.yaml\ndata:\n  width: 256\n")
    (tmp_path / "leaf.yaml").write_text("base: mid.yaml\ndata:\n  context: [1]\ntrain:\n  name: leaf\n")
    cfg = load_config(tmp_path / "leaf.yaml", ["data.height=96"])
    assert (cfg.data.height, cfg.data.width, cfg.data.context) == (96, 256, [1])  # override > leaf > mid > root
    assert cfg.loss.ssim_alpha == 0.5 and cfg.train.name == "leaf"
    assert "base" not in load_config_data(tmp_path / "leaf.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="base chain loops"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml \(base of .*orphan.yaml\)"):
        load_config(tmp_path / "orphan.yaml")
    (tmp_path / "badbase.yaml").write_text("base: [x]\n")
    with pytest.raises(ConfigError, match="base: expected a file name"):
        load_config(tmp_path / "badbase.yaml")
    (tmp_path / "badkey.yaml").write_text("base: root.yaml\ndata:\n  hieght: 3\n")
    with pytest.raises(ConfigError, match="data.hieght: unknown key"):
        load_config(tmp_path / "badkey.yaml")


if __name__ == "__main__":  # record the effective configs (only for a deliberate change of meaning)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    data = {p.name: effective(p) for p in sorted(CONFIGS.glob("*.yaml"))}
    RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD} ({len(data)} configs)")
