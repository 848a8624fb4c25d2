"""`KittiDataset`: target + context frames from KITTI raw (or synthetic KITTI-format) drives.

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
- `filename`: "date/drive/NNNNNNNNNN"; `original_size`: int64 [2] = (W0, H0).

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

from semdepth_core.data.kitti import (
    KittiDrive, KittiFormatError, read_depth_png, read_label_png, read_rgb, velodyne_depth,
)
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
    """Colour-jitter factors, applied in this fixed order: brightness, contrast, saturation, hue."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0

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
    return JitterParams(
        brightness=_uniform(max(0.0, 1 - b), 1 + b) if b else 1.0,
        contrast=_uniform(max(0.0, 1 - c), 1 + c) if c else 1.0,
        saturation=_uniform(max(0.0, 1 - s), 1 + s) if s else 1.0,
        hue=_uniform(-h, h) if h else 0.0,
    )


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

def _to_tensor(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    if (rgb.shape[1], rgb.shape[0]) != size:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


class KittiDataset(Dataset):
    """Self-supervised training / validation samples from KITTI raw drives under `root`.

    refs: list of SampleRef, a split file path, or None (every frame with all context frames
    under root, camera 2). augment: an AugmentConfig-like object (flip: bool, brightness,
    contrast, saturation, hue, optional jitter_prob and flip_prob) or None.
    """

    def __init__(self, root: str | Path, refs: Sequence[SampleRef] | str | Path | None = None,
                 height: int = 192, width: int = 640, context: Sequence[int] = (-1, 1),
                 augment: Any = None, with_gt: bool = True, gt_source: str = "auto",
                 training: bool = True):
        self.root = Path(root)
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
        if refs is None:
            refs = refs_for_root(self.root, self.context)
        elif isinstance(refs, (str, Path)):
            refs = read_split_file(refs)
        self.refs = [SampleRef(*r) for r in refs]
        if not self.refs:
            raise ValueError(f"no samples: {self.root} has no frames with context {self.context} (or refs is empty)")
        self._drives: dict[tuple[str, str, int], KittiDrive] = {}
        self._validate()

    def _drive(self, ref: SampleRef) -> KittiDrive:
        key = (ref.date, ref.drive, ref.cam)
        if key not in self._drives:
            self._drives[key] = KittiDrive(ref.drive_dir(self.root), cams=(ref.cam,))
        return self._drives[key]

    def _validate(self) -> None:
        missing = []
        for ref in self.refs:
            drive = self._drive(ref)
            for f in (ref.frame, *(ref.frame + o for o in self.context)):
                if f not in drive:
                    missing.append(f"{ref.name} (needs frame {f}, cam {ref.cam})")
                    break
        if missing:
            raise KittiFormatError(f"{self.root}: {len(missing)} samples lack their target/context images, "
                                   f"e.g. {missing[:3]}")

    def __len__(self) -> int:
        return len(self.refs)

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
    def load(self, index: int, flip: bool = False, jitter: JitterParams | None = None) -> dict[str, Any]:
        """The item for `index` with an explicit flip / jitter (deterministic)."""
        ref = self.refs[index]
        drive = self._drive(ref)
        size = (self.width, self.height)
        ctx_frames = [ref.frame + o for o in self.context]

        rgb_np = read_rgb(drive.image_path(ref.frame, ref.cam))
        H0, W0 = rgb_np.shape[:2]
        calib = drive.calib
        if calib.image_size(ref.cam) != (W0, H0):
            raise KittiFormatError(f"{drive.image_path(ref.frame, ref.cam)}: image is {W0}x{H0} but "
                                   f"S_rect_0{ref.cam} in {drive.date_dir} says {calib.image_size(ref.cam)}")
        rgb = _to_tensor(rgb_np, size)
        ctx = [read_rgb(drive.image_path(f, ref.cam)) for f in ctx_frames]
        for f, im in zip(ctx_frames, ctx):
            if im.shape[:2] != (H0, W0):
                raise KittiFormatError(f"{drive.image_path(f, ref.cam)}: size {im.shape[1]}x{im.shape[0]} "
                                       f"differs from the target's {W0}x{H0}")
        rgb_ctx = torch.stack([_to_tensor(im, size) for im in ctx]) if ctx else \
            torch.zeros(0, 3, self.height, self.width)
        K = resize_intrinsics(calib.K(ref.cam), (W0, H0), size)

        item: dict[str, Any] = {"filename": ref.name, "original_size": torch.tensor([W0, H0], dtype=torch.int64)}

        if self.with_gt:
            depth = self._depth_gt(drive, ref, (W0, H0))
            if depth is not None:
                item["depth_gt"] = torch.from_numpy(depth)[None]
            sem_p, dyn_p = drive.semantic_path(ref.frame, ref.cam), drive.dynamic_path(ref.frame, ref.cam)
            for key, p, dtype in (("semantic_gt", sem_p, torch.int64), ("dynamic_gt", dyn_p, torch.uint8)):
                if p is None:
                    continue
                lab = read_label_png(p)
                if lab.shape != (H0, W0):
                    raise KittiFormatError(f"{p}: label map is {lab.shape[1]}x{lab.shape[0]}, image is {W0}x{H0}")
                item[key] = torch.from_numpy(lab).to(dtype)

        if drive.has_oxts:
            pkt = drive.oxts(ref.frame)
            item["speed"] = torch.tensor(pkt.speed, dtype=torch.float32)
            sensor = f"image_0{ref.cam}" if drive.has_timestamps(f"image_0{ref.cam}") else "oxts"
            if drive.has_timestamps(sensor):
                t0 = drive.timestamp(ref.frame, sensor)
                item["dt"] = torch.tensor([abs(drive.timestamp(f, sensor) - t0) for f in ctx_frames],
                                          dtype=torch.float32)
            if calib.T_velo_imu is not None:
                T_w = drive.camera_poses([ref.frame, *ctx_frames], ref.cam)  # Mercator scale of the target
                T_ctx_tgt = invert_se3_np(T_w[1:]) @ T_w[0]
                if flip:
                    T_ctx_tgt = FLIP @ T_ctx_tgt @ FLIP
                item["pose_gt"] = torch.from_numpy(T_ctx_tgt.astype(np.float32))

        if flip:
            rgb = rgb.flip(-1)
            rgb_ctx = rgb_ctx.flip(-1)
            K = K.copy()
            K[0, 2] = self.width - 1 - K[0, 2]
            K[0, 1] = -K[0, 1]
            for key in ("depth_gt", "semantic_gt", "dynamic_gt"):
                if key in item:
                    item[key] = item[key].flip(-1)
        item["rgb"] = rgb.contiguous()
        item["rgb_context"] = rgb_ctx.contiguous()
        item["rgb_aug"] = jitter.apply(rgb) if jitter is not None else rgb.clone()
        item["rgb_context_aug"] = jitter.apply(rgb_ctx) if jitter is not None else rgb_ctx.clone()
        item["K"] = torch.from_numpy(np.asarray(K, dtype=np.float32))
        return item

    def _depth_gt(self, drive: KittiDrive, ref: SampleRef, size0: tuple[int, int]) -> np.ndarray | None:
        dense = drive.dense_depth_path(ref.frame, ref.cam)
        velo = drive.velodyne_path(ref.frame)
        if self.gt_source == "dense" or (self.gt_source == "auto" and dense is not None):
            if dense is None:
                raise KittiFormatError(f"{drive.path}: no dense depth for frame {ref.frame} (gt_source='dense')")
            depth = read_depth_png(dense)
            if depth.shape != (size0[1], size0[0]):
                raise KittiFormatError(f"{dense}: depth is {depth.shape[1]}x{depth.shape[0]}, "
                                       f"image is {size0[0]}x{size0[1]}")
            return depth
        if velo is None:
            if self.gt_source == "velodyne":
                raise KittiFormatError(f"{drive.path}: no Velodyne scan for frame {ref.frame} (gt_source='velodyne')")
            return None
        return velodyne_depth(drive.load_velodyne(ref.frame), drive.calib, ref.cam, size0)


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
