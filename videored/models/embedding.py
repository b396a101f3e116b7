"""Patch embeddings: per-frame 16x16 patches, spatial position embedding, learned temporal embedding.

Token order (every tool in videored relies on it): patch token n of a clip with T frames and a
g_h x g_w patch grid belongs to frame n // (g_h*g_w), row (n % (g_h*g_w)) // g_w, col n % g_w.
Images are clips with T = 1 and no temporal embedding.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from timm.layers import PatchEmbed, trunc_normal_


class SpaceTimeEmbedding(nn.Module):
    """(B, C, T, H, W) or (B, C, H, W) pixels -> cls (B, 1, D) and patch tokens (B, T*gh*gw, D)."""

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, embed_dim: int,
                 num_frames: int | None) -> None:
        super().__init__()
        self.num_frames = num_frames  # None: image model (inputs are (B, C, H, W))
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size,
                                      in_chans=in_chans, embed_dim=embed_dim)
        gh, gw = self.patch_embed.grid_size
        self.grid = (num_frames or 1, gh, gw)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + gh * gw, embed_dim))  # cls + spatial
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if num_frames is not None:
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
            trunc_normal_(self.time_embed, std=0.02)
        else:
            self.register_parameter("time_embed", None)

    @property
    def num_patches(self) -> int:
        T, gh, gw = self.grid
        return T * gh * gw

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_frames is None:
            if x.ndim != 4:
                raise ValueError(f"image model expects (B, C, H, W), got shape {tuple(x.shape)}")
            x = x.unsqueeze(2)  # (B, C, 1, H, W)
        elif x.ndim != 5 or x.shape[2] != self.num_frames:
            raise ValueError(f"video model expects (B, C, T={self.num_frames}, H, W), "
                             f"got shape {tuple(x.shape)}")
        B, _, T = x.shape[:3]
        patches = self.patch_embed(rearrange(x, "b c t h w -> (b t) c h w"))  # (B*T, S, D)
        patches = rearrange(patches, "(b t) s d -> b t s d", b=B, t=T)
        patches = patches + self.pos_embed[:, None, 1:]  # spatial position, shared by frames
        if self.time_embed is not None:
            patches = patches + self.time_embed[:, :, None]  # (1, T, 1, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        return cls, rearrange(patches, "b t s d -> b (t s) d")  # (B, 1, D), (B, N, D)
