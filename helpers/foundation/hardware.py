"""Device choice and seeding, shared by every notebook and the training loop."""
import random

import numpy as np
import torch


def pick_device() -> torch.device:
    """The fastest available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a seed gives the same samples on the same machine with the same
    number of CPU threads (OMP_NUM_THREADS: a convolution sums in another order on another count, which moves
    the last bits of a sample)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
