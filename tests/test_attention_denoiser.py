"""The homework's one-step denoiser (helpers/attention_denoiser.py): the attention UNet at t = 0, rebuilt from its
checkpoint config like every run's network."""
import torch

from helpers.attention_denoiser import AttentionDenoiser
from helpers.attention_unet import AttentionUNet
from helpers.denoise import denoising_loss
from helpers.training import runs


def test_it_is_the_attention_unet_at_time_zero_and_rebuilds_from_its_config():
    torch.manual_seed(0)
    denoiser = AttentionDenoiser(in_channels=1, hidden=8, image_size=28)
    unet = AttentionUNet(in_channels=1, hidden=8, image_size=28)
    unet.load_state_dict(denoiser.state_dict())
    z = torch.randn(3, 1, 28, 28)
    assert torch.equal(denoiser(z), unet(z, torch.zeros(3)))
    assert not torch.equal(denoiser(z), unet(z, torch.full((3,), 0.5)))   # the time input matters to the UNet
    rebuilt = runs.build(denoiser.config)
    assert type(rebuilt) is AttentionDenoiser and rebuilt.config == denoiser.config


def test_it_trains_on_the_denoising_loss():
    torch.manual_seed(1)
    denoiser = AttentionDenoiser(in_channels=1, hidden=8, image_size=28)
    x = torch.rand(8, 1, 28, 28)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = denoising_loss(denoiser, (x,), sigma=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
