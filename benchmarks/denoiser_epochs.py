"""Seconds per training epoch of notebook 01's denoisers on this machine: the course UNet and the homework's
(`AttentionDenoiser`), at the profile's width, batch and epoch size, on the sigma = 0.5 loss.

    .venv/bin/python benchmarks/denoiser_epochs.py [--profile cpu] [--epochs 1]

Each trains from scratch into a temporary folder (nothing under checkpoints/ is touched) through the notebooks'
training loop, and prints the seconds of its epochs and the whole run's projected length (times the profile's
epochs). The pure-noise denoisers cost the same per epoch: same network, same data, one forward pass a batch.
"""
import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import denoise
from helpers.attention_denoiser import AttentionDenoiser
from helpers.course_unet import CourseUNet
from helpers.foundation import data, hardware
from helpers.training import profile
from helpers.training.loop import TrainConfig, train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=profile.PROFILES)
    parser.add_argument("--epochs", type=int, default=1, help="epochs to time (the run's length is projected)")
    args = parser.parse_args(argv)
    cfg = profile.settings("one_step_denoiser", args.profile)
    device = hardware.pick_device()
    images = data.load_mnist("train", image_size=28, value_range=(0.0, 1.0))[0][: cfg.train_images]
    networks = {"course UNet": lambda: CourseUNet(in_channels=1, hidden=cfg.hidden, image_size=28),
                "homework UNet": lambda: AttentionDenoiser(in_channels=1, hidden=cfg.attention_hidden, image_size=28)}
    print(f"profile {args.profile}, {len(images):,} images an epoch, batch {cfg.batch_size}, device {device}")
    for name, make in networks.items():
        hardware.seed_everything(0)
        config = TrainConfig(epochs=args.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=0)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            train(make().to(device), partial(denoise.denoising_loss, sigma=cfg.sigma), (images,), config, Path(folder),
                  device=device, progress=False)
            seconds = (time.perf_counter() - start) / args.epochs
        print(f"{name}: {seconds:.1f} s an epoch, a {cfg.epochs}-epoch run about {seconds * cfg.epochs / 60:.1f} min")


if __name__ == "__main__":
    main()
