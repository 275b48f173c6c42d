"""An ODE solver over any velocity: integrate dx/dt = v(x, t) from the noise at t = 1 to the data at t = 0.

A velocity is any function ``velocity(x, t, labels=None)``, t a float: a trained model (the UNets accept a
float t), or a guided velocity of `helpers.guidance`. With T steps of size h = 1 / T:

    Euler:  x <- x - h v(x, t)
    Heun:   x' = x - h v(x, t),   x <- x - h/2 (v(x, t) + v(x', t - h))   (second order, trapezoidal)

Heun's last step (to t = 0) is an Euler step, as in EDM, so the velocity is never asked for at t = 0.

Taught in notebook 02, sections 3 (Euler) and 5 (more steps, Heun).
"""
import torch

from helpers.foundation import validate

METHODS = ("euler", "heun")


def euler_step(velocity, x: torch.Tensor, t: float, h: float, labels=None) -> torch.Tensor:
    """One Euler step from time t to t - h: x - h v(x, t)."""
    # Exercise 2.3 hint: one step of size h backwards in time, from t towards 0, along the velocity at (x, t).
    ### BEGIN SOLUTION
    return x - h * velocity(x, t, labels)
    ### END SOLUTION


def heun_step(velocity, x: torch.Tensor, t: float, h: float, labels=None) -> torch.Tensor:
    """One Heun step from t to t - h: the average of the velocities at both ends of an Euler step."""
    v = velocity(x, t, labels)
    return x - h * (0.5 * (v + velocity(x - h * v, t - h, labels)))


def evaluations(steps: int, method: str) -> int:
    """Velocity evaluations per sample (a guided evaluation counts once)."""
    return 2 * steps - 1 if method == "heun" else steps


@torch.no_grad()
def integrate(velocity, x1: torch.Tensor, steps: int, labels=None, method: str = "euler",
              return_trajectory: bool = False):
    """Integrate from the noise `x1` at t = 1 to t = 0 in `steps` steps ('euler' or 'heun').

    Returns the samples, or ``(samples, trajectory)`` with the trajectory [steps + 1, *x1.shape] on the CPU.
    """
    steps = validate.count(steps, "steps")
    if method not in METHODS:
        raise ValueError(f"method must be 'euler' or 'heun', not {method!r}.")
    x, h = x1, 1.0 / steps
    trajectory = [x.cpu()] if return_trajectory else None
    for i in range(steps):
        step = heun_step if method == "heun" and i < steps - 1 else euler_step
        x = step(velocity, x, 1.0 - i * h, h, labels)
        if return_trajectory:
            trajectory.append(x.cpu())
    validate.all_finite(x, "the sampled images")
    return (x, torch.stack(trajectory)) if return_trajectory else x


def generate(velocity, count: int, shape: tuple, steps: int, seed: int, labels=None, method: str = "euler",
             batch_size: int = 250, device="cpu") -> torch.Tensor:
    """`count` samples of `shape` (C, H, W) in [-1, 1] from noise drawn with `seed`, in batches.

    The noise is drawn batch by batch from one generator, which gives the same numbers as drawing it all at
    once: the samples do not depend on `batch_size`, and memory holds one batch of noise at a time.
    `labels` (a long tensor of `count` labels) are passed to the velocity batch by batch.
    """
    count = validate.count(count, "the number of samples")
    batch_size = validate.count(batch_size, "batch_size")
    if labels is not None and len(labels) != count:
        raise ValueError(f"got {len(labels)} labels for {count} samples: give one label per sample.")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        noise = torch.randn(n, *shape, generator=generator).to(device)
        batch_labels = None if labels is None else labels[start:start + n].to(device)
        out.append(integrate(velocity, noise, steps, batch_labels, method).cpu())
    return torch.cat(out).clamp(-1, 1)
