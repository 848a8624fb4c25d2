"""Self-supervised structure-from-motion objective, paper Eq. 1 (+ optional velocity supervision)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semdepth_core.config import LossConfig
from semdepth_core.geometry.camera import resize_intrinsics
from semdepth_core.geometry.se3 import pose_vec_to_mat
from semdepth_core.geometry.warp import view_synthesis
from semdepth_core.losses.depth_hints import depth_hint_loss, hint_reprojection_loss
from semdepth_core.losses.photometric import photometric_loss
from semdepth_core.losses.reprojection import identity_reprojection_loss, min_reprojection_loss
from semdepth_core.losses.scale import depth_scale_loss
from semdepth_core.losses.smoothness import smoothness_loss
from semdepth_core.losses.velocity import velocity_loss, velocity_mean_inv_depth


def _mean_normalised(inv_depth: torch.Tensor) -> torch.Tensor:
    """Inverse depth [B,1,h,w] divided by its per-image mean (scale-free warping, loss.depth_normalization)."""
    return inv_depth / inv_depth.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling; area averaging when shrinking (an anti-aliased image pyramid, as Monodepth's
    resize_area: bilinear at 1/8 samples 2x2 taps of every 8x8 block, an aliased image whose photometric
    loss has no wider basin than the full-resolution one)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SfmLoss(nn.Module):
    """Eq. 1: L = L_p (Eq. 2, min reprojection + auto-mask) + lambda_1 * L_s (Eq. 3), averaged over scales.

    With a stereo image in the batch (`rgb_stereo`, `T_stereo` = the calibrated T_other_target) it is one
    more context with a known pose (Monodepth2's "MS"): its warp uses the metric depth, so it fixes the
    scale and cannot be combined with mean-normalised (scale-free) warping. With `depth_hint` in the batch
    and `loss.depth_hint_weight > 0`, Depth Hints add log(1+|D - D_hint|) where the hint explains the stereo
    image better than the prediction (losses/depth_hints.py).
    """

    MIN_TRAVEL_M = 0.05  # velocity-set depth scale: skip samples that barely moved (no scale information)

    def __init__(self, cfg: LossConfig, depth_range: tuple[float, float] = (0.1, 100.0)):
        super().__init__()
        self.cfg = cfg
        # targets of the depth-scale term stay inside the sigmoid's range (2x margin at both ends)
        self.mean_inv_range = (2.0 / depth_range[1], 0.5 / depth_range[0])

    def forward(
        self,
        batch: dict,
        inv_depths: list[torch.Tensor],
        pose_vecs: torch.Tensor,
        K: torch.Tensor,
        scale_free: bool | None = None,
        velocity_active: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Eq. 1 over scales; batch needs rgb [B,3,H,W], rgb_context [B,N,3,H,W] (+ speed [B], dt [B,N]).

        inv_depths: scales x [B,1,h,w] (scale 0 = input resolution); pose_vecs: [B,N,6] of T_ctx_tgt;
        K: [B,3,3] at the input resolution. scale_free: warp with mean-normalised inverse depth
        (default: cfg.depth_normalization); then the velocity (when velocity_active, speed and dt are
        given) sets the depth scale, else the fixed anchor does (losses/scale.py). Without
        normalisation the velocity term is the blog's |‖t‖ − |v|Δt|. Returns a dict of scalars.
        """
        cfg = self.cfg
        target = batch["rgb"]  # [B,3,H,W]
        contexts = batch["rgb_context"]  # [B,N,3,H,W]
        B, N = contexts.shape[:2]
        H, W = target.shape[-2:]
        if pose_vecs.shape[:2] != (B, N) or pose_vecs.shape[-1] != 6:
            raise ValueError(f"SfmLoss: pose_vecs must be [B,N,6]=[{B},{N},6], got {tuple(pose_vecs.shape)}")
        num_scales = min(cfg.num_scales, len(inv_depths))
        if num_scales < 1:
            raise ValueError("SfmLoss: no inverse depth scales given")
        normalize = cfg.depth_normalization if scale_free is None else bool(scale_free)
        K = K.to(target.dtype)
        T_ctx_tgt = pose_vec_to_mat(pose_vecs.reshape(B * N, 6)).reshape(B, N, 4, 4)
        stereo = "rgb_stereo" in batch
        if stereo:  # the stereo image is one more context, with its calibrated pose
            if normalize:
                raise ValueError("SfmLoss: a stereo context needs metric (not mean-normalised) depth; "
                                 "set loss.depth_normalization: false with data.stereo")
            contexts = torch.cat([contexts, batch["rgb_stereo"][:, None]], 1)  # [B,N+1,3,H,W]
            T_ctx_tgt = torch.cat([T_ctx_tgt, batch["T_stereo"].to(T_ctx_tgt)[:, None]], 1)  # [B,N+1,4,4]
            N += 1
        hints = cfg.depth_hint_weight > 0 and "depth_hint" in batch
        if hints and not stereo:
            raise ValueError("SfmLoss: depth hints need the stereo image (data.stereo: true)")
        if hints and not cfg.upsample_scales:
            raise ValueError("SfmLoss: depth hints are compared at the input resolution; set loss.upsample_scales: true")

        photo_terms, smooth_terms, masked_fractions, hint_terms = [], [], [], []
        if cfg.upsample_scales:
            # Monodepth2: every scale's inverse depth is upsampled and warps at full resolution, so
            # all S scales x N contexts are warped and compared in one batched call each, and the
            # (scale-independent) identity losses of the auto-mask are computed once.
            S = num_scales
            inv_full = torch.cat([_resize(inv_depths[s], (H, W)) for s in range(S)], 0)  # [S*B,1,H,W]
            if normalize:
                inv_full = _mean_normalised(inv_full)
            depth = (1.0 / inv_full.clamp(min=1e-6)).repeat(N, 1, 1, 1)  # [N*S*B,1,H,W], context-major
            src = contexts.transpose(0, 1).repeat_interleave(S, 0).reshape(N * S * B, 3, H, W)
            T = T_ctx_tgt.transpose(0, 1).repeat_interleave(S, 0).reshape(N * S * B, 4, 4)
            Ks = K.repeat(N * S, 1, 1)
            # border padding as in Monodepth2: out-of-view pixels repeat the edge instead of turning black
            warped, _ = view_synthesis(src, depth, T, Ks, padding_mode="border", with_valid=False)  # [N*S*B,3,H,W]
            reproj = photometric_loss(warped, target, cfg.ssim_alpha)  # [N*S*B,1,H,W]; target broadcast
            reproj = reproj.reshape(N, S, B, H, W).permute(1, 2, 0, 3, 4)  # [S,B,N,H,W]
            ctx_list = [contexts[:, j] for j in range(N)]
            identity = identity_reprojection_loss(target, ctx_list, cfg.ssim_alpha) if cfg.automask else None
            always = cfg.depth_hint_mode == "always"
            if hints and not always:
                hint_loss = hint_reprojection_loss(target, batch["rgb_stereo"], batch["depth_hint"],
                                                   batch["T_stereo"].to(target), K, cfg.ssim_alpha)  # [B,1,H,W]
            for s in range(S):
                loss_map, mask = min_reprojection_loss(
                    target, [], None, automask=cfg.automask, min_reprojection=cfg.min_reprojection,
                    alpha=cfg.ssim_alpha, identity_loss=identity, reprojection=reproj[s])
                photo_terms.append(loss_map.mean())
                masked_fractions.append(1.0 - mask.float().mean())
                if hints:
                    pred_depth = 1.0 / inv_full[s * B:(s + 1) * B].clamp(min=1e-6)  # [B,1,H,W] metric
                    hint_terms.append(depth_hint_loss(pred_depth, batch["depth_hint"], None, None) if always else
                                      depth_hint_loss(pred_depth, batch["depth_hint"], loss_map, hint_loss))
        else:
            for s in range(num_scales):
                h, w = inv_depths[s].shape[-2:]
                tgt_s = _resize(target, (h, w))
                ctx_s = [_resize(contexts[:, j], (h, w)) for j in range(N)]
                K_s = resize_intrinsics(K, (W, H), (w, h))
                inv_s = _mean_normalised(inv_depths[s]) if normalize else inv_depths[s]
                depth = 1.0 / inv_s.clamp(min=1e-6)  # [B,1,h,w]
                warped = [view_synthesis(ctx_s[j], depth, T_ctx_tgt[:, j], K_s, padding_mode="border",
                                         with_valid=False)[0]
                          for j in range(N)]
                loss_map, mask = min_reprojection_loss(
                    tgt_s, warped, ctx_s, automask=cfg.automask,
                    min_reprojection=cfg.min_reprojection, alpha=cfg.ssim_alpha,
                )
                photo_terms.append(loss_map.mean())
                masked_fractions.append(1.0 - mask.float().mean())
        for s in range(num_scales):  # Eq. 3 on each scale's own inverse depth, weight 1/2^s
            inv_depth = inv_depths[s]  # [B,1,h,w]
            image_s = _resize(target, inv_depth.shape[-2:])  # [B,3,h,w]
            smooth_terms.append(smoothness_loss(inv_depth, image_s) / (2 ** s))

        photometric = torch.stack(photo_terms).mean()
        smoothness = torch.stack(smooth_terms).mean()
        total = photometric + cfg.smoothness_weight * smoothness

        zero = torch.zeros((), dtype=total.dtype, device=total.device)
        hint = torch.stack(hint_terms).mean() if hint_terms else zero
        if hint_terms:
            total = total + cfg.depth_hint_weight * hint
        velocity, anchor = zero, zero
        has_speed = velocity_active and cfg.velocity_weight > 0 and "speed" in batch and "dt" in batch
        if has_speed and not normalize:  # metric pose: the blog's velocity term on ||t||
            velocity = velocity_loss(pose_vecs[..., :3], batch["speed"], batch["dt"])
            total = total + cfg.velocity_weight * velocity
        elif normalize:  # scale-free warp: the velocity sets each moving sample's depth scale, the anchor the rest
            moved = torch.zeros(B, dtype=torch.bool, device=total.device)
            if has_speed:
                moved = (batch["speed"][:, None] * batch["dt"].abs()).min(dim=1).values > self.MIN_TRAVEL_M  # [B]
            if bool(moved.any()):
                target = velocity_mean_inv_depth(pose_vecs[moved, :, :3], batch["speed"][moved],
                                                 batch["dt"][moved], *self.mean_inv_range)  # [B']
                velocity = torch.stack([depth_scale_loss(inv_depths[s][moved], target)
                                        for s in range(num_scales)]).mean()
                total = total + cfg.velocity_weight * velocity
            still = ~moved
            if cfg.scale_anchor_weight > 0 and bool(still.any()):
                anchor = torch.stack([depth_scale_loss(inv_depths[s][still], 1.0 / cfg.scale_anchor_depth)
                                      for s in range(num_scales)]).mean()
                total = total + cfg.scale_anchor_weight * anchor

        return {
            "total": total,
            "photometric": photometric,
            "smoothness": smoothness,
            "velocity": velocity,
            "scale_anchor": anchor,
            "depth_hint": hint,
            # fraction of pixels whose identity loss won (masked as static), averaged over scales
            "automask_fraction": torch.stack(masked_fractions).mean().detach(),
        }
