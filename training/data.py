"""Dataset construction for training: the KITTI-layout, synthetic, mixed and rosbag data kinds of `data.kind`.

`build_datasets(cfg, rank, world)` is the entry point (with the guard against training on Eigen test drives);
`SeededItems` and `SkipSampler` make a resumed run's data order and augmentation identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch.distributed as dist
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler, Sampler

from semdepth_core.config import Config, ConfigError
from training.runtime import preserved_rng, resolve_path, seed_everything


class SeededItems(Dataset):
    """Makes each item's random augmentation a function of (seed, epoch, index) only.

    This keeps a resumed run bit-identical to an uninterrupted one whatever the number of workers
    or where the epoch was interrupted; the global RNG streams are left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item_seed = (self.seed * 1_000_003 + self.epoch * 10_007 + index) % 2**31
        with preserved_rng():
            seed_everything(item_seed)
            return self.dataset[index]


class SkipSampler(Sampler):
    """Wraps a DistributedSampler and drops its first `skip` indices (resuming inside an epoch)."""

    def __init__(self, base: DistributedSampler):
        self.base, self.skip = base, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(self.base)[self.skip:])

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)


def synthetic_drive_root(cfg: Config, seed: int) -> Path:
    """Generate (once) the synthetic drive `seed` into its own KITTI-format root under cache_dir."""
    from semdepth_core.data.synthetic import generate_drive

    s = cfg.data.synthetic
    lead = s.lead_car or seed in s.lead_car_seeds
    from semdepth_core.data.synthetic import GENERATOR_VERSION

    key = (f"seed{seed}_{s.render_width}x{s.render_height}_f{s.frames}_v{s.speed:g}_lead{int(lead)}"
           f"_gen{GENERATOR_VERSION}")
    root = resolve_path(s.cache_dir) / key
    marker = root / ".complete"
    if marker.is_file():
        return root
    if root.exists():  # an interrupted generation: start over
        shutil.rmtree(root)
    tmp = root.with_name(f".{key}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    generate_drive(tmp, frames=s.frames, seed=seed, width=s.render_width, height=s.render_height,
                   lead_car=lead, speed=s.speed)
    (tmp / ".complete").write_text("ok\n")
    try:
        os.replace(tmp, root)
    except OSError:
        if not marker.is_file():  # not another process's finished copy of the same drive
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process published it first: reuse theirs
    return root


def make_kitti_dataset(cfg: Config, root: Path, split: str, training: bool, with_gt: bool):
    from semdepth_core.data.dataset import KittiDataset
    from semdepth_core.data.splits import read_split_file

    if not root.is_dir():
        raise ConfigError(f"data.root: {root} is not a directory")
    what = "data.train_split" if training else "data.val_split"
    if split and not resolve_path(split).is_file():
        raise ConfigError(f"{what}: split file {resolve_path(split)} does not exist; generate the Eigen-Zhou lists "
                          f"from your KITTI raw with `python -m training.make_split --root {root} --out "
                          f"{resolve_path(split).parent}` (or set {what} to an existing list, or \"\" for every frame)")
    try:
        refs = read_split_file(resolve_path(split)) if split else None
        return KittiDataset(
            root, refs=refs, height=cfg.data.height, width=cfg.data.width,
            context=list(cfg.data.context) if training else [],  # validation needs no context frames
            augment=cfg.data.augment if training else None, with_gt=with_gt, gt_source=cfg.data.gt_source,
            training=training,
        )
    except (OSError, ValueError) as exc:  # KittiFormatError is a ValueError
        raise ConfigError(f"{what if split else 'data.root'}: cannot build the dataset under {root}: {exc}") from exc


def _split_over_roots(cfg: Config, roots: list[Path]) -> list:
    """data.train_split's frames, each served from the synthetic drive root that holds its drive."""
    from semdepth_core.data.dataset import KittiDataset
    from semdepth_core.data.splits import read_split_file

    try:
        refs = read_split_file(resolve_path(cfg.data.train_split))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.train_split: {exc}") from exc
    datasets, matched = [], 0
    for root in roots:
        mine = [r for r in refs if (root / r.date / r.drive).is_dir()]
        if mine:
            matched += len(mine)
            datasets.append(KittiDataset(root, refs=mine, height=cfg.data.height, width=cfg.data.width,
                                         context=list(cfg.data.context), augment=cfg.data.augment,
                                         with_gt=False, gt_source=cfg.data.gt_source, training=True))
    if matched != len(refs):
        missing = next(r for r in refs if not any((root / r.date / r.drive).is_dir() for root in roots))
        raise ConfigError(f"data.train_split: {len(refs) - matched} frames are in no training drive "
                          f"(data.synthetic.train_seeds), e.g. {missing.date}/{missing.drive} {missing.frame}")
    return datasets


def build_datasets(cfg: Config, rank: int, world: int):
    """(train dataset, val dataset or None); refuses Eigen test drives in training unless data.allow_test_drives."""
    from semdepth_core.data.kitti import TestDriveError, check_training_drives

    train, val = _build_datasets(cfg, rank, world)
    try:  # every data kind: a KITTI-layout training sample from one of the 28 Eigen test drives is refused
        found = check_training_drives(_kitti_drives(train), allow=cfg.data.allow_test_drives)
    except TestDriveError as exc:
        raise ConfigError(f"data.allow_test_drives: {exc}") from None
    if found and rank == 0:
        print(f"data: training on {len(found)} Eigen test drive(s) ({', '.join(found)}): data.allow_test_drives is "
              "true, so Eigen test scores of this run are not held-out scores")
    return train, val


def _kitti_drives(ds) -> set[str]:
    """Drive folder names of the KITTI-layout samples in `ds` (ConcatDatasets searched through)."""
    from semdepth_core.data.dataset import KittiDataset

    if isinstance(ds, ConcatDataset):
        return set().union(*(_kitti_drives(d) for d in ds.datasets))
    return {s.seq.drive for s in ds.samples} if isinstance(ds, KittiDataset) else set()


def _build_datasets(cfg: Config, rank: int, world: int):
    """(train dataset, val dataset or None); synthetic drives are generated by rank 0 first."""
    if cfg.data.kind == "synthetic":
        seeds = list(cfg.data.synthetic.train_seeds) + list(cfg.data.synthetic.val_seeds)
        if set(cfg.data.synthetic.train_seeds) & set(cfg.data.synthetic.val_seeds):
            raise ConfigError("data.synthetic.val_seeds: must not overlap train_seeds")
        if rank == 0:
            for seed in seeds:
                synthetic_drive_root(cfg, seed)
        if world > 1:
            dist.barrier()
        train_roots = [synthetic_drive_root(cfg, s) for s in cfg.data.synthetic.train_seeds]
        if cfg.data.train_split:  # e.g. the kept images of two-stage training (§4.3)
            train = ConcatDataset(_split_over_roots(cfg, train_roots))
        else:
            train = ConcatDataset([make_kitti_dataset(cfg, r, "", training=True, with_gt=False) for r in train_roots])
        vals = [make_kitti_dataset(cfg, synthetic_drive_root(cfg, s), "", training=False, with_gt=True)
                for s in cfg.data.synthetic.val_seeds]
        return train, (ConcatDataset(vals) if vals else None)

    if cfg.data.kind == "mixed":
        if rank == 0:  # synthetic drives are generated once, by rank 0, before every process indexes them
            for group in (cfg.data.sources, cfg.data.val_sources):
                for src in group:
                    if src.kind == "synthetic":
                        for seed in src.seeds:
                            synthetic_drive_root(cfg, seed)
        if world > 1:
            dist.barrier()
        return build_mixed_datasets(cfg, verbose=rank == 0)

    if cfg.data.kind == "rosbag":
        return build_rosbag_datasets(cfg, verbose=rank == 0)

    if not cfg.data.root:
        raise ConfigError("data.root: required for data.kind: kitti")
    root = resolve_path(cfg.data.root)
    train = make_kitti_dataset(cfg, root, cfg.data.train_split, training=True, with_gt=False)
    val = None
    if cfg.data.val_split:
        val_root = resolve_path(cfg.data.val_root) if cfg.data.val_root else root
        val = make_kitti_dataset(cfg, val_root, cfg.data.val_split, training=False, with_gt=True)
    return train, val


def build_rosbag_datasets(cfg: Config, verbose: bool = True):
    """data.kind rosbag: training targets from the rosbag2 recording(s) at data.root (semdepth_ros.bag_dataset,
    imported only here: semdepth_core never imports ROS packages nor rosbags).

    Prints and (rank 0) writes `bag_summary.json` beside the run: per bag its topics, images, kept train / held-out
    targets and every dropped target counted by reason. The held-out part (data.bag.val_fraction) has no depth
    ground truth, so it is not validated on here; score it with `semdepth_ros.replay --evaluate`."""
    try:
        from semdepth_ros.bag_dataset import BagDataError, build_bag_datasets
    except ImportError as exc:
        raise ConfigError(f"data.kind: rosbag needs the rosbags package and semdepth_ros ({exc})") from exc
    d = cfg.data
    if not d.root:
        raise ConfigError("data.root: data.kind rosbag needs a rosbag2 folder or a folder of bags "
                          "(--set data.root=PATH_TO_BAG)")
    try:
        train, val, summary = build_bag_datasets(
            resolve_path(d.root), d.bag, d.height, d.width, list(d.context), augment=d.augment,
            stereo=d.stereo, cache_images=d.cache_images, log=print if verbose else None)
    except BagDataError as exc:
        raise ConfigError(f"data.root: {exc}") from exc
    if verbose:
        print(f"data: rosbag: {summary['train']} training targets, {summary['val']} held out by time"
              + (" (not validated: bags carry no depth ground truth)" if val is not None else ""))
        run_dir = resolve_path(cfg.train.out_dir) / cfg.train.name
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".bag_summary.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, run_dir / "bag_summary.json")
    return train, None


def _source_dataset(cfg: Config, src, key: str, training: bool, hints):
    """One data.sources entry -> a FrameDataset (training: with context, stereo and hints; validation: GT)."""
    from semdepth_core.data.dataset import KittiDataset, OdometryDataset
    from semdepth_core.data.splits import read_split_file, refs_for_root

    d = cfg.data
    common = dict(height=d.height, width=d.width, context=list(d.context) if training else [],
                  augment=d.augment if training else None, training=training,
                  stereo=d.stereo and training, hints=hints if training else None, cache_images=d.cache_images)
    try:
        if src.kind == "rosbag":  # the topics and sampling of data.bag; the summary is printed with the others
            if not training:
                raise ConfigError(f"{key}.kind: rosbag recordings have no depth ground truth to validate on")
            from semdepth_ros.bag_dataset import build_bag_datasets

            return build_bag_datasets(resolve_path(src.root), d.bag, d.height, d.width, list(d.context),
                                      augment=d.augment, stereo=d.stereo, cache_images=d.cache_images, log=None)[0]
        if src.kind == "odometry":
            if not training:
                raise ConfigError(f"{key}.kind: KITTI odometry has no depth ground truth to validate on")
            return OdometryDataset(resolve_path(src.root), src.sequences or None, src.cams or [0],
                                   frame_rate=src.frame_rate, **common)
        cams = src.cams or [2]
        roots = ([resolve_path(src.root)] if src.kind == "kitti"
                 else [synthetic_drive_root(cfg, seed) for seed in src.seeds])
        parts = []
        for root in roots:
            if src.split:  # the split's own cameras
                refs = read_split_file(resolve_path(src.split))
            else:  # every frame of each target camera that has its context frames
                refs = sorted((r for c in cams for r in refs_for_root(root, tuple(common["context"]), cam=c)),
                              key=lambda r: (r.date, r.drive, r.frame, r.cam))
            if src.drives:
                refs = [r for r in refs if r.drive in src.drives]
            refs = [r for r in refs if r.drive not in src.exclude_drives]
            if not refs:
                raise ConfigError(f"{key}: no frames under {root} (drives {src.drives or 'all'}, "
                                  f"excluded {src.exclude_drives})")
            parts.append(KittiDataset(root, refs=refs, with_gt=not training, gt_source=src.gt_source, **common))
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)
    except (OSError, ValueError) as exc:  # KittiFormatError is a ValueError
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{key}: cannot build the dataset: {exc}") from exc


def build_mixed_datasets(cfg: Config, verbose: bool = True):
    """data.kind mixed: the training sources (each repeated `repeat` times) and the validation sources.

    Prints (when verbose) what each source contributes and every counted skip with its reason."""
    hints = None
    if cfg.data.depth_hints:
        from semdepth_core.data.stereo_hints import StereoHints

        h = cfg.data.hints
        hints = StereoHints(h.num_disparities, h.block_size, resolve_path(h.cache_dir) if h.cache_dir else None,
                            h.lr_check, h.min_texture)
    train_parts, val_parts, report = [], [], []
    for group, parts, training in (("sources", train_parts, True), ("val_sources", val_parts, False)):
        for i, src in enumerate(getattr(cfg.data, group)):
            ds = _source_dataset(cfg, src, f"data.{group}[{i}]", training, hints)
            parts.extend([ds] * (src.repeat if training else 1))
            report.append((f"{'train' if training else 'val'} {src.kind} {src.root or src.seeds}", ds,
                           src.repeat if training else 1))
    if verbose:
        for what, ds, repeat in report:
            skipped: dict[str, int] = {}
            for p in (ds.datasets if isinstance(ds, ConcatDataset) else [ds]):
                for reason, n in p.skipped.items():
                    skipped[reason] = skipped.get(reason, 0) + n
            line = f"data: {what}: {len(ds)} samples" + (f" (x{repeat} per epoch)" if repeat > 1 else "")
            if skipped:
                line += "; skipped " + ", ".join(f"{n} ({reason})" for reason, n in skipped.items())
            print(line)
    train = train_parts[0] if len(train_parts) == 1 else ConcatDataset(train_parts)
    val = (val_parts[0] if len(val_parts) == 1 else ConcatDataset(val_parts)) if val_parts else None
    return train, val
