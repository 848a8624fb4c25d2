"""Self-supervised training of the depth and pose networks (paper §3 Eq. 1, protocol of §5.2).

    python -m training.train --config training/configs/NAME.yaml [--set key=value ...]
                             [--resume CKPT|auto] [--device cpu|cuda|auto]
    torchrun --nproc_per_node 2 -m training.train --config ...   # DistributedDataParallel

Outputs under `train.out_dir/train.name/`: `last.ckpt`, `best.ckpt` (by val abs_rel), `log.jsonl`
(one line per step), `config.yaml`, `tb/` (TensorBoard), and with `data.kind: rosbag` `bag_summary.json`
(kept and dropped targets per bag, with reasons). `--resume` continues exactly: model,
optimiser, scheduler, step counters, position inside the epoch and every RNG state are restored.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from semdepth_core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_matching,
    load_state_dict_checked,
    save_checkpoint,
)
from semdepth_core.config import (
    Config,
    ConfigError,
    config_to_dict,
    config_with_overrides,
    load_config,
    save_config,
)
from semdepth_core.data.dataset import collate
from semdepth_core.data.labels import IGNORE, NUM_CLASSES
from semdepth_core.losses.segdepth import segdepth_loss
from semdepth_core.losses.sfm import SfmLoss
from training.data import SeededItems, SkipSampler, build_datasets
from training.runtime import (
    check_writable,
    preserved_rng,
    resolve_device,
    resolve_path,
    resolved_model_config,
    rng_state,
    seed_everything,
    set_rng_state,
    setup_distributed,
)

# ============================================================================ small utilities

def colorize_inv_depth(inv_depth: torch.Tensor) -> np.ndarray:
    """[1,h,w] inverse depth -> HxWx3 uint8 (magma, near = bright), normalised by its 95th percentile."""
    from semdepth_core.viz import colorize

    v = inv_depth.detach().float().cpu().numpy()[0]
    return colorize(v, 0.0, float(np.percentile(v, 95)) + 1e-8, "magma")


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors moved to `device` (non-blocking); other values as they are."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class SemanticCache:
    """The frozen semantic net's guidance features of each training image, computed once (train.cache_semantics).

    Keyed by the item's (filename, cam); computed on the un-jittered, unflipped image and stored in fp16;
    a flipped item gets them mirrored. Logits are not kept (SegDepth, which needs them, is refused)."""

    def __init__(self, depth_model):
        self.model = depth_model
        self.store: dict[tuple[str, int], list[torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, batch: dict):
        from semdepth_core.nets.semantic import SemanticOutput

        rgb = batch["rgb"]  # [B,3,H,W] un-jittered, flipped where batch["flipped"]
        flipped = batch["flipped"].tolist()
        keys = [(name, int(cam)) for name, cam in zip(batch["filename"], batch["cam"].tolist())]
        todo = [b for b, k in enumerate(keys) if k not in self.store]
        if todo:
            x = torch.stack([rgb[b].flip(-1) if flipped[b] else rgb[b] for b in todo])
            out = self.model.run_semantic(x)
            for i, b in enumerate(todo):
                self.store[keys[b]] = [f[i].to(torch.float16) for f in out.features]
        feats = []
        for level in range(len(self.store[keys[0]])):
            maps = [self.store[k][level].to(rgb.dtype) for k in keys]
            feats.append(torch.stack([m.flip(-1) if flipped[b] else m for b, m in enumerate(maps)]))
        return SemanticOutput(None, feats)


# ============================================================================ trainer

class Trainer:
    """Owns models, optimiser, data and logging; `fit()` runs epochs until done or a budget ends."""

    def __init__(self, cfg: Config, device: torch.device, rank: int = 0, world: int = 1,
                 resume: dict | None = None):
        from semdepth_core.nets.model import build_models

        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.is_main = rank == 0
        self.run_dir = resolve_path(cfg.train.out_dir) / cfg.train.name

        seed_everything(cfg.train.seed)  # same initial weights on every process
        try:
            self.depth_model, self.pose_net = build_models(resolved_model_config(cfg), len(cfg.data.context))
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc
        if cfg.train.init_from and resume is None:
            self._init_from(cfg.train.init_from)
        self.depth_model.to(device)
        self.pose_net.to(device)
        self.loss_fn = SfmLoss(cfg.loss, (cfg.model.min_depth, cfg.model.max_depth))
        self.semantic_cache = SemanticCache(self.depth_model) if cfg.train.cache_semantics else None
        # the depth loss needs the semantic net for guidance or SegDepth only
        self.needs_semantics = cfg.model.guidance or cfg.loss.segdepth_weight > 0 or cfg.model.semantic.finetune
        # SegDepth variant: a training-only U-Net on the full-resolution disparity (never exported)
        self.seg_head = None
        if cfg.loss.segdepth_weight > 0:
            from semdepth_core.nets.unet import UNet

            self.seg_head = UNet(in_ch=1, num_classes=2).to(device)

        depth_params = [p for p in self.depth_model.depth_parameters() if p.requires_grad]
        pose_params = [p for p in self.pose_net.parameters() if p.requires_grad]
        groups = [{"params": depth_params, "lr": cfg.optim.depth_lr, "name": "depth"},
                  {"params": pose_params, "lr": cfg.optim.pose_lr, "name": "pose"}]
        if self.seg_head is not None:
            groups.append({"params": list(self.seg_head.parameters()), "lr": cfg.optim.depth_lr, "name": "segdepth"})
        self.optimizer = torch.optim.Adam(groups, weight_decay=cfg.optim.weight_decay)
        # §5.2: learning rates halved every step_epochs epochs
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.optim.step_epochs, cfg.optim.gamma)

        self.depth_ddp, self.pose_ddp, self.seg_ddp = self.depth_model, self.pose_net, self.seg_head
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            unused = cfg.loss.num_scales < 4 or cfg.model.semantic.finetune
            self.depth_ddp = DDP(self.depth_model, device_ids=ids, find_unused_parameters=unused)
            self.pose_ddp = DDP(self.pose_net, device_ids=ids)
            if self.seg_head is not None:
                self.seg_ddp = DDP(self.seg_head, device_ids=ids)

        train_ds, val_ds = build_datasets(cfg, rank, world)
        self.train_items = SeededItems(train_ds, cfg.train.seed)
        self.sampler = SkipSampler(DistributedSampler(self.train_items, num_replicas=world, rank=rank,
                                                      shuffle=True, seed=cfg.train.seed))
        if len(self.sampler.base) < cfg.data.batch_size:
            raise ConfigError(
                f"data.batch_size: {cfg.data.batch_size} exceeds the {len(self.sampler.base)} training samples "
                f"per process ({len(train_ds)} in total)")
        self.loader = DataLoader(self.train_items, batch_size=cfg.data.batch_size, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, drop_last=True, collate_fn=collate,
                                 pin_memory=device.type == "cuda", persistent_workers=False,
                                 # its own generator: creating an iterator must not draw from the
                                 # global RNG, or a resumed run would shift the global stream
                                 generator=torch.Generator().manual_seed(cfg.train.seed))
        self.val_loader = None
        if val_ds is not None and self.is_main:
            self.val_loader = DataLoader(val_ds, batch_size=cfg.data.val_batch_size, shuffle=False,
                                         num_workers=cfg.data.num_workers, collate_fn=collate)

        full = len(self.sampler.base) // cfg.data.batch_size
        self.steps_per_epoch = min(full, cfg.train.steps_per_epoch) if cfg.train.steps_per_epoch > 0 else full

        self.epoch, self.global_step, self.batch_in_epoch = 0, 0, 0
        self.best_abs_rel = math.inf
        self.skipped_steps = 0
        self.elapsed_before = 0.0  # training seconds spent by earlier (resumed) invocations
        self._flat_steps = 0  # consecutive steps with a constant depth map (collapse detector)
        self._start_time: float | None = None
        self.stop_reason = ""
        if resume is not None:
            self._load_state(resume)

        self.writer = None
        self.log_file = None
        if self.is_main:
            self._open_logs(resumed=resume is not None)

    def _init_from(self, path: str) -> None:
        """train.init_from: start from another run's network weights (matching names and shapes)."""
        ckpt = load_checkpoint(resolve_path(path))
        report = {}
        for key, module in (("depth_model", self.depth_model), ("pose_net", self.pose_net)):
            if not isinstance(ckpt.get(key), dict):
                raise CheckpointError(f"train.init_from: {path} has no {key} weights")
            report[key] = load_matching(module, ckpt[key])
        dm = report["depth_model"]
        if len(dm["ignored"]) > len(dm["copied"]):  # fine-tuning adds layers; it does not swap the network
            raise ConfigError(f"train.init_from: {path} shares no depth-network weights with this model for "
                              f"{len(dm['ignored'])} of its {len(dm['ignored']) + len(dm['copied'])} tensors "
                              f"({self.cfg.model.depth_net}); is it the same depth_net?")
        if self.is_main:
            print("init_from " + str(path) + ": " + "; ".join(
                f"{k}: {len(r['copied'])} tensors copied, {len(r['new'])} new, {len(r['ignored'])} ignored"
                for k, r in report.items()))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "config": config_to_dict(self.cfg),
            "depth_model": self.depth_model.state_dict(),
            "pose_net": self.pose_net.state_dict(),
            "seg_head": self.seg_head.state_dict() if self.seg_head is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "best_abs_rel": self.best_abs_rel,
            "skipped_steps": self.skipped_steps,
            "elapsed_s": self.elapsed(),
            "world_size": self.world,
            "rng": rng_state(),
        }

    def _load_state(self, ckpt: dict) -> None:
        load_state_dict_checked(self.depth_model, ckpt["depth_model"], "depth_model")
        load_state_dict_checked(self.pose_net, ckpt["pose_net"], "pose_net")
        if self.seg_head is not None:
            if ckpt.get("seg_head") is None:
                raise CheckpointError("seg_head: the checkpoint has no SegDepth head but loss.segdepth_weight > 0")
            load_state_dict_checked(self.seg_head, ckpt["seg_head"], "seg_head")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self.best_abs_rel = float(ckpt["best_abs_rel"])
        self.skipped_steps = int(ckpt["skipped_steps"])
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        if int(ckpt.get("world_size", 1)) != self.world:
            print(f"warning: checkpoint was written with {ckpt.get('world_size')} processes, resuming with "
                  f"{self.world}: data order will differ from an uninterrupted run", file=sys.stderr)
        set_rng_state(ckpt["rng"])

    def save(self, name: str) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / name, self.state_dict())

    # ---------------------------------------------------------------- logging
    def _open_logs(self, resumed: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "config.yaml")
        log_path = self.run_dir / "log.jsonl"
        if resumed and log_path.exists():
            # drop entries written after the checkpoint by the interrupted run: they are redone now
            kept = [line for line in log_path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.global_step]
            tmp = log_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, log_path)
        elif log_path.exists():
            log_path.unlink()
        self.log_file = open(log_path, "a", buffering=1)
        if self.cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.global_step + 1)

    def log(self, record: dict) -> None:
        if self.log_file is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
            self.log_file.write(json.dumps(clean) + "\n")

    def close(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ---------------------------------------------------------------- one step
    def train_step(self, batch: dict) -> tuple[dict[str, float], bool, dict]:
        """Forward both networks on the augmented images, Eq. 1 on the originals, one Adam step."""
        batch = to_device(batch, self.device)
        rgb_aug = batch["rgb_aug"]  # [B,3,H,W]
        ctx_aug = batch["rgb_context_aug"]  # [B,N,3,H,W]
        semantic = self.semantic_cache(batch) if self.semantic_cache is not None else None
        if semantic is not None:
            outputs = self.depth_ddp(rgb_aug, semantic)
        elif self.needs_semantics:
            outputs = self.depth_ddp(rgb_aug)
        else:  # a semantic net only for the deployed model's labels: not run while training the depth
            outputs = self.depth_ddp(rgb_aug, with_semantics=False)
        pose_vecs = self.pose_ddp(rgb_aug, [ctx_aug[:, j] for j in range(ctx_aug.shape[1])])  # [B,N,6]
        lc = self.cfg.loss
        warming_up = lc.velocity_weight > 0 and self.global_step < lc.velocity_warmup_steps
        scale_free = lc.depth_normalization or warming_up
        losses = self.loss_fn(batch, outputs["inv_depths"], pose_vecs, batch["K"], scale_free=scale_free,
                              velocity_active=not warming_up)
        if self.seg_head is not None:  # SegDepth: L = L_p + lambda*L_s + alpha*L_b
            labels = outputs["sem_logits"].argmax(1)  # frozen semantic net's trainIds [B,H,W]
            labels[labels >= NUM_CLASSES] = IGNORE  # its extra "ignore" channel
            seg = segdepth_loss(self.seg_ddp, outputs["inv_depths"][0], labels,
                                self.cfg.loss.segdepth_w0, self.cfg.loss.segdepth_sigma)
            losses["segdepth"] = seg
            losses["total"] = losses["total"] + self.cfg.loss.segdepth_weight * seg

        finite = torch.isfinite(losses["total"]).to(torch.float32)
        if self.world > 1:  # every process must agree, or the gradient all-reduce would hang
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        ok = bool(finite.item() > 0)
        self.optimizer.zero_grad(set_to_none=True)
        if ok:
            losses["total"].backward()
            if self.cfg.optim.grad_clip > 0:
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
            self.optimizer.step()
        values = {k: float(v.detach()) for k, v in losses.items()}
        return values, ok, {"inv_depth": outputs["inv_depths"][0][:1].detach(), "rgb": batch["rgb"][:1]}

    COLLAPSE_STEPS = 20

    def _check_collapse(self, values: dict, record: dict) -> None:
        """Warn once when the depth map has collapsed to a constant (smoothness exactly 0 for many steps).

        A saturated inverse-depth sigmoid gives no gradient and never recovers; how runs got there and
        what prevents it (loss.depth_normalization with loss.scale_anchor_weight or velocity) is in
        docs/experiments.md.
        """
        self._flat_steps = self._flat_steps + 1 if values.get("smoothness", 1.0) == 0.0 else 0
        if self._flat_steps == self.COLLAPSE_STEPS:
            record["collapse_warning"] = True
            if self.is_main:
                print(f"warning: step {self.global_step}: the depth output has been constant for "
                      f"{self.COLLAPSE_STEPS} steps (collapsed, saturated sigmoid); this run will not recover — "
                      "set loss.depth_normalization=true (scale-free warping) with loss.scale_anchor_weight > 0 "
                      "(or velocity_weight > 0), or use pretrained encoder weights (model.pretrained)", file=sys.stderr)

    # ---------------------------------------------------------------- loops
    def _budget_exhausted(self, start_time: float) -> bool:
        """max_steps / max_minutes reached (decided on rank 0 and shared, so every process stops together)."""
        t = self.cfg.train
        stop = 0
        if t.max_steps > 0 and self.global_step >= t.max_steps:
            stop, self.stop_reason = 1, f"train.max_steps={t.max_steps} reached"
        elif t.max_minutes > 0 and (time.monotonic() - start_time) / 60.0 >= t.max_minutes:
            stop, self.stop_reason = 2, f"train.max_minutes={t.max_minutes:g} reached"
        if self.world > 1:
            flag = torch.tensor([stop], dtype=torch.int64, device=self.device if self.device.type == "cuda" else "cpu")
            dist.broadcast(flag, src=0)
            stop = int(flag.item())
            if stop and not self.stop_reason:
                self.stop_reason = "budget reached on rank 0"
        return stop > 0

    def train_epoch(self, start_time: float) -> bool:
        """Train from batch_in_epoch to the end of the epoch; False if a budget stopped it early."""
        from tqdm import tqdm

        cfg = self.cfg
        self.train_items.set_epoch(self.epoch)
        skip = self.batch_in_epoch * cfg.data.batch_size
        self.sampler.set_epoch(self.epoch, skip)
        remaining = self.steps_per_epoch - self.batch_in_epoch
        self.depth_model.train()
        self.pose_net.train()
        bar = tqdm(total=self.steps_per_epoch, initial=self.batch_in_epoch, disable=not self.is_main,
                   desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}", dynamic_ncols=True, leave=False)
        images_per_batch = cfg.data.batch_size * self.world
        t_last = time.perf_counter()
        for i, batch in enumerate(self.loader):
            if i >= remaining:
                break
            values, ok, sample = self.train_step(batch)
            now = time.perf_counter()
            ips = images_per_batch / max(now - t_last, 1e-9)
            t_last = now
            self.global_step += 1
            self.batch_in_epoch += 1
            if not ok:
                self.skipped_steps += 1
            record = {"step": self.global_step, "epoch": self.epoch, **values,
                      "lr_depth": self.optimizer.param_groups[0]["lr"],
                      "lr_pose": self.optimizer.param_groups[1]["lr"], "images_per_s": ips,
                      "elapsed_s": round(self.elapsed(), 3)}
            if not ok:
                record.update(skipped=True, reason="non-finite loss", skipped_steps=self.skipped_steps)
                if self.is_main:
                    print(f"warning: step {self.global_step}: non-finite loss {values['total']}, "
                          f"optimizer step skipped ({self.skipped_steps} so far)", file=sys.stderr)
            self._check_collapse(values, record)
            if self.is_main:
                self.log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{values['total']:.4f}", img_s=f"{ips:.1f}")
                self._tensorboard(values, ok, ips, sample)
            every = cfg.train.checkpoint_every_steps
            if every > 0 and self.global_step % every == 0 and self.batch_in_epoch < self.steps_per_epoch:
                self.save("last.ckpt")
            # at the epoch's last batch the budget is checked after the epoch-end work (fit)
            if self.batch_in_epoch < self.steps_per_epoch and self._budget_exhausted(start_time):
                bar.close()
                return False
        bar.close()
        return True

    def _tensorboard(self, values: dict, ok: bool, ips: float, sample: dict) -> None:
        if self.writer is None:
            return
        step = self.global_step
        if step % max(self.cfg.train.log_every, 1) == 0 or step == 1:
            for k, v in values.items():
                if math.isfinite(v):
                    self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/images_per_s", ips, step)
            self.writer.add_scalar("train/lr_depth", self.optimizer.param_groups[0]["lr"], step)
            self.writer.add_scalar("train/skipped_steps", self.skipped_steps, step)
        if self.cfg.train.image_every > 0 and (step % self.cfg.train.image_every == 0 or step == 1):
            self.writer.add_image("train/rgb", sample["rgb"][0].clamp(0, 1).cpu(), step)
            self.writer.add_image("train/inv_depth", colorize_inv_depth(sample["inv_depth"][0]), step,
                                  dataformats="HWC")

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """KITTI metrics (median-scaled and unscaled) on the validation set, rank 0 only."""
        if self.val_loader is None:
            return None
        from semdepth_core.eval.metrics import MetricAccumulator, upsample_depth

        self.depth_model.eval()
        scaled = MetricAccumulator(median_scaling=True)
        unscaled = MetricAccumulator(median_scaling=False)
        skipped = 0
        with preserved_rng():
            for batch in self.val_loader:
                inv = self.depth_model(batch["rgb"].to(self.device))["inv_depths"][0]  # [B,1,H,W]
                for b in range(inv.shape[0]):
                    gt = batch["depth_gt"][b][0]  # [H0,W0] (a list when sizes differ)
                    pred = upsample_depth(1.0 / inv[b, 0].clamp(min=1e-6).cpu(), tuple(gt.shape))
                    try:
                        scaled.add(gt, pred)
                        unscaled.add(gt, pred)
                    except ValueError:  # e.g. no valid GT pixel inside the crop
                        skipped += 1
        self.depth_model.train()
        if len(scaled) == 0:
            print(f"warning: validation skipped: no frame had valid ground truth ({skipped} frames)", file=sys.stderr)
            return None
        out = scaled.summary()
        out["unscaled"] = {k: v for k, v in unscaled.summary().items() if isinstance(v, float)}
        return out

    def elapsed(self) -> float:
        """Seconds of training so far, including the invocations this run was resumed from."""
        if self._start_time is None:
            return self.elapsed_before
        return time.monotonic() - self._start_time

    def fit(self) -> str:
        cfg = self.cfg
        # train.max_minutes is a budget for the whole run: a resumed run continues the clock
        start_time = self._start_time = time.monotonic() - self.elapsed_before
        finished = True
        try:
            if self._budget_exhausted(start_time):  # e.g. resumed at max_steps
                finished = False
            while finished and self.epoch < cfg.train.epochs:
                if not self.train_epoch(start_time):
                    finished = False
                    break
                self.epoch += 1
                self.batch_in_epoch = 0
                self.scheduler.step()
                every = cfg.train.val_every_epochs  # 0 = validate after the last epoch only
                if (every > 0 and self.epoch % every == 0) or self.epoch == cfg.train.epochs:
                    self._validate_and_track()
                    if self.world > 1:
                        dist.barrier()  # the other processes wait for rank 0's validation
                self.save("last.ckpt")
                if self._budget_exhausted(start_time) and self.epoch < cfg.train.epochs:
                    finished = False
                    break
            if not finished:
                if self.batch_in_epoch > 0:  # stopped mid-epoch: score the final weights too
                    self._validate_and_track()
                    if self.world > 1:
                        dist.barrier()
                self.save("last.ckpt")
                message = f"stopped: {self.stop_reason} at step {self.global_step}; checkpoint {self.run_dir / 'last.ckpt'}"
            else:
                message = f"finished {cfg.train.epochs} epochs ({self.global_step} steps)"
            if self.skipped_steps:
                message += f"; {self.skipped_steps} steps skipped for non-finite loss"
            if self.is_main:
                print(message)
                self.log({"step": self.global_step, "event": "stop" if not finished else "done", "message": message})
            return message
        finally:
            self.close()

    def _validate_and_track(self) -> None:
        metrics = self.validate() if self.is_main else None
        if metrics is None:
            return
        from semdepth_core.eval.metrics import format_metrics_table

        print(f"epoch {self.epoch}: validation (median-scaled)\n{format_metrics_table(metrics)}\n"
              f"unscaled: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics["unscaled"].items()))
        self.log({"step": self.global_step, "epoch": self.epoch, "val": metrics})
        if self.writer is not None:
            for prefix, values in (("val", metrics), ("val_unscaled", metrics["unscaled"])):
                for k, v in values.items():
                    if isinstance(v, float) and math.isfinite(v):
                        self.writer.add_scalar(f"{prefix}/{k}", v, self.global_step)
        if metrics.get("abs_rel", math.inf) < self.best_abs_rel:
            self.best_abs_rel = metrics["abs_rel"]
            self.save("best.ckpt")


# ============================================================================ CLI

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML config (training/configs/*.yaml); optional with --resume CKPT")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.depth_lr=1e-4 (repeatable)")
    p.add_argument("--resume", help="checkpoint to resume from, or 'auto' for OUT_DIR/NAME/last.ckpt if present")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="overrides train.device")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    resume_ckpt = None
    try:
        if args.config:
            cfg = load_config(args.config, args.overrides)
        elif args.resume and args.resume != "auto":
            cfg = config_with_overrides(load_checkpoint(args.resume)["config"], args.overrides)
        else:
            raise SystemExit("error: --config is required (or --resume CKPT to continue with its config)")
        if args.device:
            cfg.train.device = args.device

        run_dir = resolve_path(cfg.train.out_dir) / cfg.train.name
        if args.resume:
            path = run_dir / "last.ckpt" if args.resume == "auto" else Path(args.resume)
            if args.resume != "auto" or path.is_file():
                resume_ckpt = load_checkpoint(path)
                print(f"resuming from {path} (epoch {resume_ckpt['epoch']}, step {resume_ckpt['global_step']})")
            else:
                print(f"--resume auto: no {path}, starting fresh")
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rank, world, local_rank = setup_distributed(cfg.train.device)
    try:
        if rank == 0:
            check_writable(run_dir)
        device = resolve_device(cfg.train.device, local_rank)
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        else:
            torch.set_num_threads(max(1, torch.get_num_threads() // max(world, 1)))
        try:
            trainer = Trainer(cfg, device, rank, world, resume=resume_ckpt)
        except (ConfigError, CheckpointError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        trainer.fit()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
