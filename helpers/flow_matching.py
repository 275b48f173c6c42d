"""Flow matching on the straight path from data (t = 0) to noise (t = 1): the path and the training loss.

    x_t = (1 - t) x0 + t x1,   x0 ~ data,  x1 ~ N(0, I),  t ~ U[0, 1]  (or logit-normal: t = sigmoid(n), n ~ N(0, 1))
    target velocity  v = d x_t / d t = x1 - x0,   loss = E || v_theta(x_t, t, c) - (x1 - x0) ||^2

For a class-conditioned model the class is replaced by the null label (``model.config["num_classes"]``) with
probability ``p_uncond``, so the same network also learns the unconditional velocity that classifier-free
guidance needs (`helpers.guidance`). Sampling, which integrates dx/dt = v from t = 1 to t = 0, is
`helpers.samplers`.

Taught in notebook 02, section 2 (time only), and notebook 03, section 1 (with classes).
"""

import torch
import torch.nn.functional as F

TIME_SAMPLINGS = ("uniform", "logit_normal")


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t x1, with one time per sample (`t` has shape [B])."""
    t = t.view(-1, *[1] * (x0.dim() - 1))
    return (1 - t) * x0 + t * x1


def training_times(n: int, device, dtype, time_sampling: str = "uniform") -> torch.Tensor:
    """n times in (0, 1): uniform, or logit-normal (Esser et al. 2024), which trains mid-path times most,
    where the sample's identity is decided, and the nearly trivial ends least."""
    if time_sampling == "logit_normal":
        return torch.sigmoid(torch.randn(n, device=device, dtype=dtype))
    return torch.rand(n, device=device, dtype=dtype)


def drop_labels(labels: torch.Tensor, p_uncond: float, null_label: int) -> torch.Tensor:
    """Each label replaced by `null_label` with probability `p_uncond` (classifier-free guidance's training)."""
    drop = torch.rand(labels.shape, device=labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def loss(model, x0: torch.Tensor, labels: torch.Tensor | None = None, p_uncond: float = 0.1,
         time_sampling: str = "uniform") -> torch.Tensor:
    """MSE between the predicted and the true velocity x1 - x0 at a random time of the straight path."""
    # Exercise 2.2 hint: draw noise like x0 and one time per sample, build x_t on the path, and regress the path's velocity (labels, when given, go through drop_labels first).
    ### BEGIN SOLUTION
    x1 = torch.randn_like(x0)
    t = training_times(x0.shape[0], x0.device, x0.dtype, time_sampling)
    x_t = interpolate(x0, x1, t)
    if labels is None:
        prediction = model(x_t, t)
    else:
        prediction = model(x_t, t, drop_labels(labels, p_uncond, model.config["num_classes"]))
    return F.mse_loss(prediction, x1 - x0)
    ### END SOLUTION


def training_loss(p_uncond: float = 0.1, time_sampling: str = "uniform"):
    """`loss` as the hook `helpers.training.train` calls: ``loss_fn(model, batch)``, batch = (images,) or
    (images, labels)."""
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, not {time_sampling!r}.")

    def loss_fn(model, batch):
        return loss(model, *batch, p_uncond=p_uncond, time_sampling=time_sampling)
    return loss_fn
