"""How large the frozen Cityscapes ESPNet must see an image: accuracy against apparent focal length, and cost.

    python benchmarks/semantic_scale.py [--quick]

The Cityscapes val frame in ../shared/data (with its ground truth) is resized to a range of widths;
at width w its focal length is 2262 * w / 2048 px (Cityscapes fx 2262 at 2048 px). ESPNet's pixel
accuracy at each size tells which focal length it needs. A KITTI image at the network width W_net
(fx 721.5 at 1242 px) with `model.semantic.input_scale` s shows ESPNet a focal length of
721.5 * W_net / 1242 * s: the table gives, for the shipped 416x128, the input scale that matches each
row, and the ESPNet time per image at the KITTI shape (2 threads).

Second table: the 2:1 Cityscapes frame through the sizing policies of the predictor at the shipped
pixel budget (416x128) and input scale: squashed to 416x128, or at its own aspect ratio (320x160).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.common import print_table, write_result  # noqa: E402

CITYSCAPES_FX, CITYSCAPES_W = 2262.0, 2048
KITTI_FX, KITTI_W, KITTI_H = 721.5377, 1242, 375
NET_W, NET_H = 416, 128
SHIPPED_SCALE = 3.0
WIDTHS = (384, 512, 640, 768, 1024, 1280)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="three widths, one timing repeat")
    args = p.parse_args(argv)
    import cv2
    import torch
    import torch.nn.functional as F

    from semdepth_core.config import SemanticConfig
    from semdepth_core.data.labels import IGNORE, color_to_train_ids
    from semdepth_core.infer.processing import network_size_for
    from semdepth_core.nets.semantic import build_semantic_net
    from semdepth_core.paths import shared_data_dir

    torch.set_num_threads(2)
    shared = shared_data_dir()
    net = build_semantic_net(SemanticConfig(enabled=True, arch="espnet", weights=str(
        shared / "espnet_cityscapes" / "espnet_p2_q8_cityscapes.pth"))).eval()
    d = shared / "cityscapes_samples"
    rgb = cv2.imread(str(d / "frankfurt_000001_058914_leftImg8bit.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    gt = color_to_train_ids(cv2.imread(str(d / "frankfurt_000001_058914_gtFine_color.png"), cv2.IMREAD_COLOR)[:, :, ::-1])
    valid = gt != IGNORE

    def accuracy(size: tuple[int, int]) -> float:
        x = torch.from_numpy(np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)))
        with torch.no_grad():
            logits = net(x.permute(2, 0, 1)[None].float() / 255.0).logits
        pred = F.interpolate(logits, size=gt.shape, mode="bilinear", align_corners=False).argmax(1)[0].numpy()
        return float((pred[valid] == gt[valid]).mean())

    def ms_at(size: tuple[int, int], reps: int) -> float:
        x = torch.rand(1, 3, size[1], size[0])
        with torch.no_grad():
            net(x)
            t0 = time.perf_counter()
            for _ in range(reps):
                net(x)
        return (time.perf_counter() - t0) / reps * 1e3

    widths = WIDTHS[1::2] if args.quick else WIDTHS
    reps = 1 if args.quick else 3
    kitti_fx_net = KITTI_FX * NET_W / KITTI_W
    rows = []
    for w in widths:
        fx = CITYSCAPES_FX * w / CITYSCAPES_W
        s = fx / kitti_fx_net  # the input scale at which ESPNet sees KITTI at this focal length
        kitti_size = (int(round(NET_W * s)), int(round(NET_H * s)))
        rows.append({"cityscapes_width": w, "focal_px": round(fx, 1), "pixel_acc": accuracy((w, w // 2)),
                     "kitti_input_scale": round(s, 2), "espnet_kitti_size": f"{kitti_size[0]}x{kitti_size[1]}",
                     "espnet_ms_kitti": ms_at(kitti_size, reps)})
    print(f"ESPNet (Cityscapes weights) on frankfurt_000001_058914 vs the focal length it sees; "
          f"KITTI at {NET_W}x{NET_H} (fx {kitti_fx_net:.0f}) with input_scale s shows it fx {kitti_fx_net:.0f}*s")
    print_table(rows)

    aspect = network_size_for((CITYSCAPES_W, 1024), NET_W * NET_H)
    policies = []
    for name, size in (("squashed to the training shape", (NET_W, NET_H)), ("own aspect ratio", aspect)):
        seen = (int(size[0] * SHIPPED_SCALE), int(size[1] * SHIPPED_SCALE))
        policies.append({"policy": name, "network_input": f"{size[0]}x{size[1]}",
                         "espnet_input": f"{seen[0]}x{seen[1]}", "pixel_acc": accuracy(seen)})
    print(f"\nthe 2:1 frame through the predictor's sizing at the shipped budget ({NET_W}x{NET_H}, "
          f"input_scale {SHIPPED_SCALE:g})")
    print_table(policies)
    out = write_result("semantic_scale", {
        "frame": "cityscapes_samples/frankfurt_000001_058914 (gtFine colour ground truth, ignore excluded)",
        "kitti_network_input": [NET_W, NET_H], "shipped_input_scale": SHIPPED_SCALE,
        "rows": rows, "sizing_policies": policies}, quick=args.quick)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
