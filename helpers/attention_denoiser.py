"""The homework's one-step denoiser D(z) (notebook 01, section 5), on its own UNet (`helpers.attention_unet`).

    D(z) = UNet(z, t = 0)

The denoiser has no time input, so every block's embedding is the one of t = 0, e = MLP(sinusoid(0)), a learned
constant: each ResBlock reads h = Conv(SiLU(GN(x))) + b. Trained with notebook 01's losses (`helpers.denoise`).
"""
import torch

from helpers.attention_unet import AttentionUNet


class AttentionDenoiser(AttentionUNet):
    """``model(z [B, C, H, W]) -> x_hat [B, C, H, W]``: the attention UNet without time or class."""

    def __init__(self, in_channels: int = 1, hidden: int = 32, image_size: int = 32):
        super().__init__(in_channels, hidden, image_size)
        self.config = dict(name="AttentionDenoiser", in_channels=in_channels, hidden=hidden, image_size=image_size)

    def forward(self, z):
        return super().forward(z, torch.zeros(len(z), device=z.device))
