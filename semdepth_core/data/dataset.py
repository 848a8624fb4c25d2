"""Datasets of target + context frames: `KittiDataset` (KITTI raw drives, and synthetic drives in the
same layout), `OdometryDataset` (KITTI odometry sequences), both `FrameDataset`s over `Sample`s of a
sequence (KittiDrive or OdometrySequence).

Item keys (docs/architecture.md), H x W = network size, H0 x W0 = original image size,
N = number of context frames:

- `rgb`, `rgb_aug`: [3,H,W] float32 in [0,1] (resized with cv2.INTER_AREA). `*_aug` carry the
  colour jitter; the plain copies never do (the photometric loss uses un-jittered images).
- `rgb_context`, `rgb_context_aug`: [N,3,H,W], same jitter parameters as the target.
- `K`: [3,3] float32 at (H, W) (half-pixel rule); under a horizontal flip cx' = W-1-cx.
- `depth_gt`: [1,H0,W0] float32 metres, 0 = invalid (gt_source "auto": dense PNG if present
  else the Velodyne projection; absent when neither exists or `with_gt=False`).
- `semantic_gt`: [H0,W0] int64 trainIds, `dynamic_gt`: [H0,W0] uint8 (when present).
- `speed`: [] float32 m/s = ||(vf, vl, vu)|| of the target OXTS packet; `dt`: [N] float32 seconds
  |t_ctx - t_tgt| (camera timestamps, else OXTS timestamps); `pose_gt`: [N,4,4] float32
  T_ctx_tgt of the rectified camera from OXTS (all three only when the drive has OXTS).
- `filename`: "date/drive/NNNNNNNNNN" ("odometry/SEQ/NNNNNN"); `original_size`: int64 [2] = (W0, H0).
- with `stereo`: `rgb_stereo` [3,H,W] (never jittered: it is only warped) the other camera of the
  rectified pair, and `T_stereo` [4,4] float32 = T_other_target from the calibration.
- with `hints`: `depth_hint` [1,H,W] float32 metres, the stereo matcher's depth (0 = none), resized
  with nearest neighbours.
- odometry: `speed` from pose differences, `dt` from frame / frame_rate, `pose_gt` from the poses.

A horizontal flip mirrors every image and GT map, sets cx' = W-1-cx and mirrors the poses
F T F with F = diag(-1,1,1,1). Flip and jitter happen only when `training` and `augment` is
given. Items of different dates can have different original sizes, so `depth_gt` /
`semantic_gt` shapes can differ inside a batch: `collate` then returns lists for those keys;
validation and evaluation use batch size 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from semdepth_core.data.kitti import STEREO_PARTNER, KittiDrive, KittiFormatError, read_label_png
from semdepth_core.data.splits import SampleRef, read_split_file, refs_for_root
from semdepth_core.geometry.camera import resize_intrinsics
from semdepth_core.geometry.se3 import invert_se3_np

GT_SOURCES = ("auto", "velodyne", "dense")
FLIP = np.diag([-1.0, 1.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------------
# Colour jitter (torch, on [...,3,H,W] in [0,1])
# --------------------------------------------------------------------------------------------

def _gray(img: torch.Tensor) -> torch.Tensor:
    return (0.299 * img[..., 0, :, :] + 0.587 * img[..., 1, :, :] + 0.114 * img[..., 2, :, :]).unsqueeze(-3)


def adjust_brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return (img * factor).clamp(0.0, 1.0)


def adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the image's own mean grey level (per image)."""
    mean = _gray(img).mean(dim=(-3, -2, -1), keepdim=True)
    return (mean + factor * (img - mean)).clamp(0.0, 1.0)


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the per-pixel grey image."""
    gray = _gray(img)
    return (gray + factor * (img - gray)).clamp(0.0, 1.0)


def rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    """[...,3,H,W] RGB in [0,1] -> HSV with hue in turns [0,1)."""
    r, g, b = img.unbind(-3)
    maxc = img.amax(dim=-3)
    minc = img.amin(dim=-3)
    delta = maxc - minc
    s = delta / maxc.clamp_min(1e-12)
    safe = delta.clamp_min(1e-12)
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.remainder(h * (1.0 / 6.0), 1.0) * (delta > 0)
    return torch.stack([h, s, maxc], dim=-3)


_HSV_N = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Closed form: channel n in (5, 3, 1) for (R, G, B) = v - v*s*clamp(min(k, 4-k), 0, 1), k = (n + 6h) mod 6."""
    h, s, v = hsv.unbind(-3)
    k = torch.remainder(_HSV_N.to(hsv) + (6.0 * h).unsqueeze(-3), 6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v.unsqueeze(-3) * (1.0 - s.unsqueeze(-3) * w)


def adjust_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by `shift` turns (in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(img)
    hsv = torch.stack([torch.remainder(hsv[..., 0, :, :] + shift, 1.0), hsv[..., 1, :, :], hsv[..., 2, :, :]], dim=-3)
    return hsv_to_rgb(hsv).clamp(0.0, 1.0)


@dataclass(frozen=True)
class JitterParams:
    """Colour-jitter factors, applied in this fixed order: brightness, contrast, saturation, hue, then
    (when `grayscale`) the grey level in all three channels, as a greyscale camera's replicated image."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    grayscale: bool = False

    def apply(self, img: torch.Tensor) -> torch.Tensor:
        out = img
        if self.brightness != 1.0:
            out = adjust_brightness(out, self.brightness)
        if self.contrast != 1.0:
            out = adjust_contrast(out, self.contrast)
        if self.saturation != 1.0:
            out = adjust_saturation(out, self.saturation)
        if self.hue != 0.0:
            out = adjust_hue(out, self.hue)
        if self.grayscale:
            out = _gray(out).expand_as(out).clamp(0.0, 1.0).contiguous()
        return out


def _aug_value(augment: Any, name: str, default: float) -> Any:
    """Field of an AugmentConfig-like object or of a plain mapping (e.g. parsed YAML)."""
    if isinstance(augment, Mapping):
        return augment.get(name, default)
    return getattr(augment, name, default)


def _uniform(lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand(()).item())


def sample_jitter(augment: Any) -> JitterParams:
    """Random factors from an AugmentConfig-like object (brightness/contrast/saturation/hue ranges)."""
    b, c, s, h = (float(_aug_value(augment, k, 0.0)) for k in ("brightness", "contrast", "saturation", "hue"))
    if min(b, c, s, h) < 0 or h > 0.5:
        raise ValueError(f"jitter ranges must be >= 0 (hue <= 0.5), got b={b} c={c} s={s} h={h}")
    g = float(_aug_value(augment, "grayscale_prob", 0.0))
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"grayscale_prob must be in [0, 1], got {g}")
    return JitterParams(
        brightness=_uniform(max(0.0, 1 - b), 1 + b) if b else 1.0,
        contrast=_uniform(max(0.0, 1 - c), 1 + c) if c else 1.0,
        saturation=_uniform(max(0.0, 1 - s), 1 + s) if s else 1.0,
        hue=_uniform(-h, h) if h else 0.0,
        grayscale=bool(g > 0 and torch.rand(()).item() < g),  # drawn only when enabled: the RNG stream is unchanged otherwise
    )


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One target image: a sequence (KittiDrive or OdometrySequence), its frame and camera."""

    seq: Any
    frame: int
    cam: int

    @property
    def name(self) -> str:
        """'date/drive/NNNNNNNNNN' for KITTI raw (the split files' naming), 'odometry/SEQ/NNNNNN' otherwise;
        a right-camera target (cam 1 or 3) gets the suffix ' r'."""
        width = 6 if self.seq.name.startswith("odometry/") else 10
        suffix = " r" if self.cam in (1, 3) and self.seq.name.startswith("odometry/") else ""
        return f"{self.seq.name}/{self.frame:0{width}d}{suffix}"


class FrameDataset(Dataset):
    """Self-supervised training / validation samples from image sequences (KITTI raw drives, synthetic
    drives in the same layout, KITTI odometry sequences), all with the item keys of this module.

    samples: the targets. context: frame offsets of the temporal context. stereo: also return the other
    camera of the target's rectified stereo pair (`rgb_stereo`, `T_stereo`); every sample's sequence must
    index that camera. cache_images: keep every resized image (and hint) in memory after its first load.
    hints: an object with `depth(seq, frame, cam) -> [H0,W0] | None` (e.g.
    `semdepth_core.data.stereo_hints.StereoHints`), giving `depth_hint`. augment: an AugmentConfig-like
    object (flip, brightness, contrast, saturation, hue, grayscale_prob, optional jitter_prob, flip_prob)
    or None.
    """

    def __init__(self, samples: Sequence[Sample], height: int = 192, width: int = 640,
                 context: Sequence[int] = (-1, 1), augment: Any = None, with_gt: bool = True,
                 gt_source: str = "auto", training: bool = True, stereo: bool = False, hints: Any = None,
                 where: str = "dataset", skipped: dict[str, int] | None = None,
                 skipped_examples: dict[str, str] | None = None, cache_images: bool = False):
        if height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        if gt_source not in GT_SOURCES:
            raise ValueError(f"gt_source must be one of {GT_SOURCES}, got {gt_source!r}")
        self.height, self.width = int(height), int(width)
        self.context = tuple(int(o) for o in context)
        if 0 in self.context:
            raise ValueError(f"context offsets must not contain 0, got {self.context}")
        self.augment = augment
        self.with_gt = with_gt
        self.gt_source = gt_source
        self.training = training
        self.stereo = bool(stereo)
        self.hints = hints
        self.cache_images = bool(cache_images)
        self._cache: dict[tuple, np.ndarray] = {}
        if hints is not None and not self.stereo:
            raise ValueError("depth hints come from the stereo pair: they need stereo=True")
        self.samples = list(samples)
        # requested targets left out, reason -> count (e.g. one side of the stereo pair missing), with an
        # example path per reason: reported by the trainer, never dropped silently
        self.skipped = dict(skipped or {})
        self.skipped_examples = dict(skipped_examples or {})
        if not self.samples:
            raise ValueError(f"{where}: no samples (no frames with context {self.context})")
        self._validate(where)

    def _validate(self, where: str) -> None:
        missing = []
        for s in self.samples:
            for f in (s.frame, *self.context_frames(s)):
                if not s.seq.has(f, s.cam):
                    missing.append(f"{s.name} (needs frame {f}, cam {s.cam})")
                    break
        if missing:
            raise KittiFormatError(f"{where}: {len(missing)} samples lack their target/context images, "
                                   f"e.g. {missing[:3]}")
        if self.stereo:
            for s in self.samples:
                other = s.seq.stereo_partner(s.cam)
                if other is None:
                    raise KittiFormatError(f"{s.seq.name}: stereo training needs camera {s.cam}'s stereo partner, "
                                           f"which this sequence does not index (cams {s.seq.cams})")
            for seq, cam in {(s.seq, s.cam) for s in self.samples}:
                K1, K2 = seq.K(cam), seq.K(seq.stereo_partner(cam))
                if not np.allclose(K1, K2, rtol=1e-4, atol=1e-3):
                    raise KittiFormatError(f"{seq.name}: cameras {cam} and {seq.stereo_partner(cam)} have different "
                                           "intrinsics; stereo warping needs a rectified pair")

    def __len__(self) -> int:
        return len(self.samples)

    def context_frames(self, sample: Sample) -> list[int]:
        """The sequence frames of `sample`'s temporal context: target frame + each offset. Subclasses
        whose sequences are not evenly spaced (rosbag recordings) pick them by timestamp instead."""
        return [sample.frame + o for o in self.context]

    # augmentation ---------------------------------------------------------------------------
    def sample_augmentation(self) -> tuple[bool, JitterParams | None]:
        """(flip, jitter) drawn with torch's RNG (seeded per DataLoader worker)."""
        if not self.training or self.augment is None:
            return False, None
        flip = bool(_aug_value(self.augment, "flip", True)) and \
            torch.rand(()).item() < float(_aug_value(self.augment, "flip_prob", 0.5))
        jitter = None
        if torch.rand(()).item() < float(_aug_value(self.augment, "jitter_prob", 1.0)):
            jitter = sample_jitter(self.augment)
        return flip, jitter

    def __getitem__(self, index: int) -> dict[str, Any]:
        flip, jitter = self.sample_augmentation()
        return self.load(index, flip=flip, jitter=jitter)

    # loading --------------------------------------------------------------------------------
    def _image(self, seq: Any, frame: int, cam: int, size0: tuple[int, int]) -> np.ndarray:
        im = seq.load_image(frame, cam)
        if (im.shape[1], im.shape[0]) != size0:
            raise KittiFormatError(f"{seq.image_path(frame, cam)}: image is {im.shape[1]}x{im.shape[0]} but "
                                   f"{seq.size_source(cam)} says {size0[0]}x{size0[1]}")
        return im

    def _net_image(self, seq: Any, frame: int, cam: int, size0: tuple[int, int]) -> torch.Tensor:
        """[3,H,W] float in [0,1] at the network size; with `cache_images` the resized uint8 image is kept
        (a few real sequences fit in memory many times over, and PNG decoding is a large part of a CPU step)."""
        key = (id(seq), frame, cam)
        small = self._cache.get(key) if self.cache_images else None
        if small is None:
            small = self._image(seq, frame, cam, size0)
            if (small.shape[1], small.shape[0]) != (self.width, self.height):
                small = cv2.resize(small, (self.width, self.height), interpolation=cv2.INTER_AREA)
            if self.cache_images:
                self._cache[key] = small
        return torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1).float().div_(255.0)

    def load(self, index: int, flip: bool = False, jitter: JitterParams | None = None) -> dict[str, Any]:
        """The item for `index` with an explicit flip / jitter (deterministic)."""
        s = self.samples[index]
        seq, cam = s.seq, s.cam
        size = (self.width, self.height)
        size0 = seq.native_size(cam)
        W0, H0 = size0
        ctx_frames = self.context_frames(s)

        rgb = self._net_image(seq, s.frame, cam, size0)
        ctx = [self._net_image(seq, f, cam, size0) for f in ctx_frames]
        rgb_ctx = torch.stack(ctx) if ctx else torch.zeros(0, 3, self.height, self.width)
        K = resize_intrinsics(seq.K(cam), size0, size)

        item: dict[str, Any] = {"filename": s.name, "original_size": torch.tensor([W0, H0], dtype=torch.int64),
                                "cam": torch.tensor(cam, dtype=torch.int64), "flipped": torch.tensor(bool(flip))}
        if self.stereo:
            other = seq.stereo_partner(cam)
            item["rgb_stereo"] = self._net_image(seq, s.frame, other, size0)
            T_st = seq.T_between(other, cam)  # target camera -> the other camera
            item["T_stereo"] = torch.from_numpy((FLIP @ T_st @ FLIP if flip else T_st).astype(np.float32))
        if self.hints is not None:
            key = ("hint", id(seq), s.frame, cam)
            hint = self._cache.get(key)
            if hint is None:
                hint = self.hints.depth(seq, s.frame, cam)
                if hint is not None:
                    if hint.shape != (H0, W0):
                        raise KittiFormatError(f"{seq.name} frame {s.frame}: depth hint is {hint.shape[1]}x{hint.shape[0]}, "
                                               f"image is {W0}x{H0}")
                    hint = cv2.resize(hint, size, interpolation=cv2.INTER_NEAREST)
                else:
                    hint = np.zeros((self.height, self.width), np.float32)
                if self.cache_images:
                    self._cache[key] = hint
            item["depth_hint"] = torch.from_numpy(np.array(hint, np.float32))[None]

        if self.with_gt:
            depth = seq.depth_gt(s.frame, cam, self.gt_source)
            if depth is not None:
                item["depth_gt"] = torch.from_numpy(depth)[None]
            labels = getattr(seq, "label_paths", None)
            for key, p, dtype in (labels(s.frame, cam) if labels else ()):
                lab = read_label_png(p)
                if lab.shape != (H0, W0):
                    raise KittiFormatError(f"{p}: label map is {lab.shape[1]}x{lab.shape[0]}, image is {W0}x{H0}")
                item[key] = torch.from_numpy(lab).to(dtype)

        motion = seq.motion(s.frame, ctx_frames, cam)
        if "speed" in motion:
            item["speed"] = torch.tensor(float(motion["speed"]), dtype=torch.float32)
        if "dt" in motion:
            item["dt"] = torch.as_tensor(np.asarray(motion["dt"]), dtype=torch.float32)
        if "pose_gt" in motion:
            T_ctx_tgt = np.asarray(motion["pose_gt"])
            if flip:
                T_ctx_tgt = FLIP @ T_ctx_tgt @ FLIP
            item["pose_gt"] = torch.from_numpy(T_ctx_tgt.astype(np.float32))

        if flip:
            rgb = rgb.flip(-1)
            rgb_ctx = rgb_ctx.flip(-1)
            K = K.copy()
            K[0, 2] = self.width - 1 - K[0, 2]
            K[0, 1] = -K[0, 1]
            for key in ("depth_gt", "semantic_gt", "dynamic_gt", "depth_hint", "rgb_stereo"):
                if key in item:
                    item[key] = item[key].flip(-1)
        item["rgb"] = rgb.contiguous()
        item["rgb_context"] = rgb_ctx.contiguous()
        item["rgb_aug"] = jitter.apply(rgb) if jitter is not None else rgb.clone()
        item["rgb_context_aug"] = jitter.apply(rgb_ctx) if jitter is not None else rgb_ctx.clone()
        if "rgb_stereo" in item:
            item["rgb_stereo"] = item["rgb_stereo"].contiguous()
        item["K"] = torch.from_numpy(np.asarray(K, dtype=np.float32))
        return item

class KittiDataset(FrameDataset):
    """Samples from KITTI raw drives (or synthetic drives in the same layout) under `root`.

    refs: list of SampleRef, a split file path, or None (every frame with all context frames
    under root, camera 2). With stereo=True each drive indexes both cameras of the pair (2 and 3),
    and a frame missing on one side is left out and counted (`skipped_summary()`).
    """

    def __init__(self, root: str | Path, refs: Sequence[SampleRef] | str | Path | None = None,
                 height: int = 192, width: int = 640, context: Sequence[int] = (-1, 1),
                 augment: Any = None, with_gt: bool = True, gt_source: str = "auto",
                 training: bool = True, stereo: bool = False, hints: Any = None, cache_images: bool = False):
        self.root = Path(root)
        if refs is None:
            refs = refs_for_root(self.root, tuple(int(o) for o in context))
        elif isinstance(refs, (str, Path)):
            refs = read_split_file(refs)
        self.refs = [SampleRef(*r) for r in refs]
        if not self.refs:
            raise ValueError(f"no samples: {self.root} has no frames with context {tuple(context)} (or refs is empty)")
        drives: dict[tuple[str, str, tuple[int, ...]], KittiDrive] = {}
        samples, skipped, examples = [], {}, {}
        for ref in self.refs:
            cams = (ref.cam, STEREO_PARTNER[ref.cam]) if stereo else (ref.cam,)
            key = (ref.date, ref.drive, cams)
            if key not in drives:
                drives[key] = KittiDrive(ref.drive_dir(self.root), cams=cams)
            drive = drives[key]
            other = STEREO_PARTNER[ref.cam]
            if stereo and drive.has(ref.frame, ref.cam) and not drive.has(ref.frame, other):
                reason = f"no image_0{other} image (stereo side missing)"
                skipped[reason] = skipped.get(reason, 0) + 1
                examples.setdefault(reason, str(drive.image_path(ref.frame, other)))
                continue
            samples.append(Sample(drive, ref.frame, ref.cam))
        super().__init__(samples, height, width, context, augment, with_gt, gt_source, training, stereo, hints,
                         where=str(self.root), skipped=skipped, skipped_examples=examples, cache_images=cache_images)



class OdometryDataset(FrameDataset):
    """Samples from KITTI odometry sequences under `root` (greyscale cameras 0/1 replicated to RGB).

    sequences: names (None = every sequence folder). cams: target cameras ((0,) = left; (0, 1) = both
    sides of the pair as targets). With stereo=True each sequence indexes both cameras of every target's
    pair; targets whose other side is missing are left out and counted (`skipped`). Odometry has no depth ground
    truth: items carry speed, dt and pose_gt from the metric poses.
    """

    def __init__(self, root: str | Path, sequences: Sequence[str] | None = None, cams: Sequence[int] = (0,),
                 height: int = 192, width: int = 640, context: Sequence[int] = (-1, 1), augment: Any = None,
                 training: bool = True, stereo: bool = False, hints: Any = None,
                 frame_rate: float = 10.0, cache_images: bool = False):
        from semdepth_core.data.kitti_odometry import OdometrySequence, find_odometry_sequences

        self.root = Path(root)
        names = list(sequences) if sequences else find_odometry_sequences(self.root)
        cams = tuple(int(c) for c in cams)
        index_cams = tuple(sorted(set(cams) | ({STEREO_PARTNER[c] for c in cams} if stereo else set())))
        samples, skipped, examples = [], {}, {}
        context = tuple(int(o) for o in context)
        for name in names:
            seq = OdometrySequence(self.root, name, cams=index_cams, frame_rate=frame_rate)
            for c in cams:
                other = STEREO_PARTNER[c]
                for f in seq.frames_with_context(context, cam=c):
                    if stereo and not seq.has(f, other):
                        reason = f"no image_{other} image (stereo side missing)"
                        skipped[reason] = skipped.get(reason, 0) + 1
                        examples.setdefault(reason, str(seq.image_path(f, other)))
                        continue
                    samples.append(Sample(seq, f, c))
        samples.sort(key=lambda smp: (smp.seq.name, smp.frame, smp.cam))
        super().__init__(samples, height, width, context, augment, with_gt=False, gt_source="auto",
                         training=training, stereo=stereo, hints=hints, where=str(self.root),
                         skipped=skipped, skipped_examples=examples, cache_images=cache_images)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: equal-shaped tensors are stacked, differently shaped ones (e.g. `depth_gt`
    across dates) and strings are returned as lists. Keys missing from some items are dropped."""
    if not batch:
        raise ValueError("collate needs at least one item")
    keys = [k for k in batch[0] if all(k in b for b in batch)]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [b[k] for b in batch]
        if all(isinstance(v, torch.Tensor) for v in vals) and len({tuple(v.shape) for v in vals}) == 1:
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out
