"""Flow matching on the straight path from data (t = 0) to noise (t = 1): the path and the training loss.

    x_t = (1 - t) x0 + t x1,   x0 ~ data,  x1 ~ N(0, I),  t ~ U[0, 1]  (or logit-normal: t = sigmoid(n), n ~ N(0, 1))
    target velocity  v = d x_t / d t = x1 - x0,   loss = E || v_theta(x_t, t, c) - (x1 - x0) ||^2

x0 and x1 are drawn independently, or (``coupling="minibatch_ot"``, the OT-CFM of Tong et al. 2024) the batch's
noises are matched to its images by the permutation of least total squared distance, which straightens the paths.

For a class-conditioned model the class is replaced by the null label (``model.config["num_classes"]``) with
probability ``p_uncond``, so the same network also learns the unconditional velocity that classifier-free
guidance needs (`helpers.guidance`). Sampling, which integrates dx/dt = v from t = 1 to t = 0, is
`helpers.samplers`.

Taught in notebook 02, section 2 (time only), and notebook 03, section 1 (with classes).
"""

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

TIME_SAMPLINGS = ("uniform", "logit_normal")
COUPLINGS = ("independent", "minibatch_ot")


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


def minibatch_ot_noise(x0: torch.Tensor) -> torch.Tensor:
    """Gaussian noise x1, one per image, reordered so that x1[i] pairs with x0[i] under the permutation sigma
    minimising sum_i || x0_i - x1_sigma(i) ||^2 (exact: scipy's linear_sum_assignment on the batch)."""
    x1 = torch.randn_like(x0)
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()).pow(2)
    _, sigma = linear_sum_assignment(cost.cpu().numpy())
    return x1[torch.as_tensor(sigma, device=x1.device)]


def loss(model, x0: torch.Tensor, labels: torch.Tensor | None = None, p_uncond: float = 0.1,
         time_sampling: str = "uniform", x1: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the predicted and the true velocity x1 - x0 at a random time of the straight path
    (x1: the noises paired with x0; by default fresh Gaussian noise, drawn independently)."""
    # Exercise 2.2 hint: draw noise like x0 (unless x1 is given) and one time per sample, build x_t on the path, and regress the path's velocity (labels, when given, go through drop_labels first).
    ### BEGIN SOLUTION
    x1 = torch.randn_like(x0) if x1 is None else x1
    t = training_times(x0.shape[0], x0.device, x0.dtype, time_sampling)
    x_t = interpolate(x0, x1, t)
    if labels is None:
        prediction = model(x_t, t)
    else:
        prediction = model(x_t, t, drop_labels(labels, p_uncond, model.config["num_classes"]))
    return F.mse_loss(prediction, x1 - x0)
    ### END SOLUTION


def training_loss(p_uncond: float = 0.1, time_sampling: str = "uniform", coupling: str = "independent"):
    """`loss` as the hook `helpers.training.loop.train` calls: ``loss_fn(model, batch)``, batch = (images,) or
    (images, labels); `coupling` pairs each batch's noises with its images ("independent" or "minibatch_ot")."""
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, not {time_sampling!r}.")
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, not {coupling!r}.")

    def loss_fn(model, batch):
        x1 = minibatch_ot_noise(batch[0]) if coupling == "minibatch_ot" else None
        return loss(model, *batch, p_uncond=p_uncond, time_sampling=time_sampling, x1=x1)
    return loss_fn
