"""The homework's UNet: residual blocks conditioned on time (and class), self-attention at low resolution.

    embedding   e = MLP(sinusoid(t)) [+ Embedding(label)],  sinusoid(t) = [sin(f_k t), cos(f_k t)],
                f_k log-spaced from 1 to 1000, t in [0, 1]
    ResBlock    h = Conv(SiLU(GN(x))) + Linear(e);  out = x' + Conv(SiLU(GN(h)))  (x' = 1x1 conv of x if widths differ)
    AttnBlock   out = x + Proj(softmax(Q K^T / sqrt(C)) V),  Q, K, V = 1x1 convs of GN(x), over the H*W positions

Levels at 32, 16 and 8 pixels (widths ch, 2ch, 2ch), attention at the 8 x 8 level and in the middle.
Labels are long tensors; the label ``num_classes`` is the null class of classifier-free guidance.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers.foundation import validate


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_frequency: float = 1000.0) -> torch.Tensor:
    """[sin(f_k t), cos(f_k t)] for dim // 2 frequencies f_k log-spaced in [1, max_frequency]."""
    frequencies = torch.exp(torch.linspace(0.0, math.log(max_frequency), dim // 2, device=t.device))
    angles = t.reshape(-1, 1).float() * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.conv1 = nn.Sequential(group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Linear(emb_dim, c_out)
        self.conv2 = nn.Sequential(group_norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(h)


class AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # [b, h*w, c]
        return x + self.proj(attended.transpose(-1, -2).reshape(b, c, h, w))


class AttentionUNet(nn.Module):
    """``model(x [B, C, 32, 32], t [B], labels [B] | None) -> velocity [B, C, 32, 32]``."""

    def __init__(self, in_channels: int = 1, hidden: int = 32, image_size: int = 32, num_classes: int = 0):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.config = dict(name="AttentionUNet", in_channels=in_channels, hidden=hidden, image_size=image_size,
                           num_classes=num_classes)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        ch, e = hidden, 4 * hidden
        self.time_mlp = nn.Sequential(nn.Linear(ch, e), nn.SiLU(), nn.Linear(e, e))
        self.class_emb = nn.Embedding(num_classes + 1, e) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down0, self.down1, self.down2 = ResBlock(ch, ch, e), ResBlock(ch, 2 * ch, e), ResBlock(2 * ch, 2 * ch, e)
        self.pool0, self.pool1 = nn.Conv2d(ch, ch, 3, 2, 1), nn.Conv2d(2 * ch, 2 * ch, 3, 2, 1)
        self.attn_down = AttnBlock(2 * ch)
        self.mid1, self.mid_attn, self.mid2 = ResBlock(2 * ch, 2 * ch, e), AttnBlock(2 * ch), ResBlock(2 * ch, 2 * ch, e)
        self.up2, self.attn_up = ResBlock(4 * ch, 2 * ch, e), AttnBlock(2 * ch)
        self.up1, self.up0 = ResBlock(4 * ch, 2 * ch, e), ResBlock(3 * ch, ch, e)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))

    def forward(self, x, t, labels=None):
        x, t, labels = validate.network_inputs("AttentionUNet", x, t, labels, self.in_channels, self.image_size,
                                               self.num_classes)
        emb = self.time_mlp(sinusoidal_embedding(t, self.config["hidden"]).to(x.dtype))
        if self.class_emb is not None:
            emb = emb + self.class_emb(labels)
        h0 = self.down0(self.conv_in(x), emb)                       # 32 x 32
        h1 = self.down1(self.pool0(h0), emb)                        # 16 x 16
        h2 = self.attn_down(self.down2(self.pool1(h1), emb))        # 8 x 8
        m = self.mid2(self.mid_attn(self.mid1(h2, emb)), emb)
        u2 = self.attn_up(self.up2(torch.cat([m, h2], 1), emb))
        u1 = self.up1(torch.cat([self.upsample(u2), h1], 1), emb)
        u0 = self.up0(torch.cat([self.upsample(u1), h0], 1), emb)
        return self.out(u0)
