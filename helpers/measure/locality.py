"""Locality calibration: the patch size P(t) at which a patch machine best imitates a trained network.

As in Kamb and Ganguli (arXiv:2412.20292): run the network's own Euler trajectory from a few noises; at
every step t_i, compare the network's denoised estimate

    x0_net = x_t - t v_theta(x_t, t)        (the straight path: x_t = (1 - t) x0 + t x1)

with the machine's x0_hat(x_t, t; P) for each candidate P, by mean squared error per sample. Each sample
votes for its best P; the schedule keeps the median vote at every step. Comparing x0 estimates rather
than velocities keeps the score meaningful near t = 1, where v is dominated by x_t itself.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from helpers import samplers
from helpers.foundation import checkpoint_files, validate
from helpers.measure import cache


@dataclass
class LocalitySchedule:
    """P(t): the calibrated patch size at the calibration step nearest to t.

    `times` (finite numbers) and `sizes` (odd positive whole numbers) are non-empty and of equal length,
    checked when the schedule is made."""

    times: list[float]
    sizes: list[int]

    def __post_init__(self):
        self.times = [validate.finite_number(t, "every time of a LocalitySchedule") for t in self.times]
        self.sizes = [validate.count(p, "every size of a LocalitySchedule") for p in self.sizes]
        if not self.times or len(self.times) != len(self.sizes):
            raise ValueError(f"a LocalitySchedule needs one size per time and at least one of each, not "
                             f"{len(self.times)} times and {len(self.sizes)} sizes.")
        if any(p % 2 == 0 for p in self.sizes):
            raise ValueError(f"every size of a LocalitySchedule must be odd (a patch is centred on its pixel), "
                             f"not {self.sizes}.")

    def __call__(self, t: float) -> int:
        t = validate.finite_number(t, "t")
        nearest = min(range(len(self.times)), key=lambda i: abs(self.times[i] - t))
        return self.sizes[nearest]


@torch.no_grad()
def calibrate(velocity: Callable, machine: Callable, train: torch.Tensor, noise: torch.Tensor, steps: int,
              candidates: list[int]) -> dict:
    """MSE between network and machine x0 estimates along the network's trajectory from `noise`.

    `machine(x_t, t, train, P)` is a denoiser of `helpers.ideal`. Returns ``times`` [steps], ``mse``
    [steps, len(candidates), samples] and ``sizes``, the median over samples of each sample's best P.
    """
    _, trajectory = samplers.integrate(velocity, noise, steps, return_trajectory=True)
    times, mse, sizes = [], [], []
    for i in range(steps):
        t = 1.0 - i / steps
        x_t = trajectory[i].to(noise.device)
        x0_net = x_t - t * velocity(x_t, t)
        errors = torch.stack([(machine(x_t, t, train, p) - x0_net).pow(2).flatten(1).mean(1) for p in candidates])
        best = torch.tensor(candidates)[errors.argmin(0).cpu()]
        times.append(t)
        mse.append(errors.cpu())
        sizes.append(int(best.median()))
    return {"times": times, "candidates": list(candidates), "mse": torch.stack(mse), "sizes": sizes}


def calibrated_schedule(velocity: Callable, machine: Callable, train: torch.Tensor, noise: torch.Tensor,
                        steps: int, candidates: list[int], run_dir: Path, config: dict,
                        recalibrate: bool = False) -> tuple[LocalitySchedule, dict]:
    """The stored calibration in ``run_dir/calibration.pt`` when its config matches, else a new one.

    `config` names what the calibration depends on (network, training-set size, noises, steps,
    candidates); when `velocity` is a network, a digest of its weights joins it, so a retrained network
    is never matched with an old calibration. A stored calibration made with another config is an error,
    not silently reused.
    """
    if isinstance(velocity, torch.nn.Module):
        config = {**config, "weights": cache.weights_digest(velocity)}
    path = Path(run_dir) / "calibration.pt"
    if path.exists() and not recalibrate:
        record = checkpoint_files.load(path)
        checkpoint_files.check_config(record, config, path)
    else:
        record = {"config": checkpoint_files.normalise(config),
                  **calibrate(velocity, machine, train, noise, steps, candidates)}
        checkpoint_files.save_atomic(record, path)
    return LocalitySchedule(record["times"], record["sizes"]), record


# Kamb and Ganguli's calibrated scales for their MNIST UNet, noisy to clean over 19 steps, at noise
# levels that correspond to t of about 0.92 down to 0.07 in this workbook's convention.
PAPER_MNIST_UNET = {"times": torch.linspace(0.92, 0.07, 19).tolist(),
                    "sizes": [27, 25, 23, 23, 21, 17, 15, 13, 11, 9, 9, 9, 7, 7, 7, 5, 5, 3, 3]}
