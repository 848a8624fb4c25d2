"""Pre- and post-processing shared by every inference backend (torch, ONNX Runtime, TensorRT).

Backends only run the networks; everything around them happens here, once:

* `preprocess(rgb_uint8, (W, H))`: HxWx3 uint8 RGB -> float32 [1,3,H,W] RGB in [0, 1] at the
  network size (cv2.INTER_AREA). Normalisation (mean/std) lives inside the networks.
* `postprocess(inv_depth_net, labels_net, (W0, H0), min_depth, max_depth)`: network-resolution
  inverse depth -> depth at the input resolution (bilinear on *inverse* depth, like the paper's
  upsampling, then 1/x), and semantic labels -> uint8 trainIds at the input resolution (nearest).
* `network_intrinsics(K, (W0, H0), (W, H))`: intrinsics of the network input (half-pixel rule).
* `network_size_for((W0, H0), pixel_budget)`: the network input size that keeps a camera's aspect ratio.
"""
from __future__ import annotations

import cv2
import numpy as np

from semdepth_core.data.labels import IGNORE, NUM_CLASSES
from semdepth_core.geometry.camera import resize_intrinsics


def check_rgb(rgb: np.ndarray, name: str = "rgb") -> np.ndarray:
    """Validate an HxWx3 uint8 RGB image and return it as a numpy array."""
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{name}: expected an HxWx3 RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {rgb.dtype}")
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ValueError(f"{name}: image too small: {rgb.shape}")
    return rgb


def check_network_size(height: int, width: int) -> tuple[int, int]:
    """Network input sizes must be positive multiples of 32 (five stride-2 stages)."""
    for key, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % 32:
            raise ValueError(f"network {key} must be a positive multiple of 32, got {v!r}")
    return int(height), int(width)


NETWORK_STRIDE = 32  # five stride-2 stages


def network_size_for(image_size: tuple[int, int], pixel_budget: int, stride: int = NETWORK_STRIDE) -> tuple[int, int]:
    """Network input (w, h) for an image of image_size=(W, H): the image's aspect ratio at about
    `pixel_budget` pixels (the checkpoint's training h*w), each side rounded to a multiple of `stride`.

    The networks are fully convolutional, so a camera is run at its own aspect ratio instead of being
    squashed to the training shape (KITTI 1242x375 at 416x128 -> 416x128; a 2:1 image -> 320x160).
    """
    W, H = int(image_size[0]), int(image_size[1])
    if W <= 0 or H <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    if pixel_budget <= 0:
        raise ValueError(f"pixel_budget must be positive, got {pixel_budget}")
    h = (pixel_budget * H / W) ** 0.5
    w = h * W / H
    return (max(stride, int(round(w / stride)) * stride), max(stride, int(round(h / stride)) * stride))


def preprocess(rgb: np.ndarray, net_size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 RGB -> contiguous float32 [1,3,h,w] in [0,1], resized to net_size=(w, h)."""
    rgb = np.ascontiguousarray(check_rgb(rgb))  # views (flips, crops, ROS buffers) are fine
    w, h = net_size
    if rgb.shape[1] != w or rgb.shape[0] != h:
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def network_intrinsics(K: np.ndarray, input_size: tuple[int, int], net_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of the network input for an image of input_size=(W0,H0) resized to net_size=(w,h)."""
    return resize_intrinsics(np.asarray(K, np.float64), input_size, net_size)


def labels_from_argmax(argmax: np.ndarray) -> np.ndarray:
    """Class indices of the semantic head -> Cityscapes trainIds uint8; class >= 19 (void) -> 255."""
    a = np.asarray(argmax)
    out = a.astype(np.uint8)
    out[(a < 0) | (a >= NUM_CLASSES)] = IGNORE
    return out


def upsample_inv_depth(inv_depth: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Bilinear (half-pixel, = grid_sample align_corners=False) resize of inverse depth to (W, H)."""
    inv = np.asarray(inv_depth, np.float32)
    W, H = out_size
    if inv.shape == (H, W):
        return inv.copy()
    return cv2.resize(inv, (W, H), interpolation=cv2.INTER_LINEAR)


def inv_depth_to_depth(inv_depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """depth = 1/inv_depth, with inv_depth clamped to [1/max_depth, 1/min_depth] (no inf/NaN)."""
    inv = np.clip(np.asarray(inv_depth, np.float32), 1.0 / max_depth, 1.0 / min_depth)
    return (1.0 / inv).astype(np.float32)


def postprocess(inv_depth: np.ndarray, labels: np.ndarray | None, input_size: tuple[int, int],
                min_depth: float, max_depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Network outputs -> (inv_depth[h,w] float32, depth[H0,W0] float32, labels[H0,W0] uint8 | None).

    inv_depth: [h,w] (or [1,1,h,w]) at the network resolution; labels: argmax class indices
    [h,w] (or [1,h,w]) of any integer dtype, or None when the model has no semantic head.
    """
    inv = np.asarray(inv_depth, np.float32).reshape(np.shape(inv_depth)[-2:])
    depth = inv_depth_to_depth(upsample_inv_depth(inv, input_size), min_depth, max_depth)
    return inv, depth, None if labels is None else resize_labels(labels, input_size)


def resize_labels(labels: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Argmax class indices [h,w] (or [1,h,w], any integer dtype) -> uint8 trainIds [H,W] at
    input_size=(W, H) (nearest neighbour; void -> 255)."""
    lab = labels_from_argmax(np.asarray(labels).reshape(np.shape(labels)[-2:]))
    W, H = input_size
    if lab.shape != (H, W):
        lab = cv2.resize(lab, (W, H), interpolation=cv2.INTER_NEAREST)
    return lab
