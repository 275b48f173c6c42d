"""The project's diffusion backend: a class-conditioned flow model, read as a DDPM noise predictor.

DeepFloyd IF's tricks speak DDPM: x_t = a x0 + b eps with a = sqrt(abar_t), b = sqrt(1 - abar_t), and a
model that predicts eps. The flow model knows the straight path z_s = (1 - s) x0 + s x1 (x1 ~ N(0, I))
and predicts v = E[x1 - x0 | z_s]. The two are the same family of points up to a scale:

    x_t / (a + b) = a / (a + b) x0 + b / (a + b) eps = (1 - s) x0 + s eps,   s = b / (a + b),

so z = x_t / (a + b) is the path point at time s with x1 = eps. On the path x0 = z - s v and
x1 = z + (1 - s) v, hence

    eps_hat(x_t, t, c) = z + (1 - s) v(z, s, c).

eps_hat is affine in v, so classifier-free guidance on eps equals guidance on v with the same gamma.
The schedule is DeepFloyd IF's (1000 steps, squaredcos_cap_v2), so the same strided timesteps
990, 960, ..., 0 apply. It is computed here, as diffusers' `DDPMScheduler` computes it (bit for bit; a test compares
them), so this backend needs no diffusers: where diffusers is missing (Colab does not preinstall it),
`project_backend` says in one sentence what DeepFloyd IF and notebook 04's checks would need, and carries on. Notebook 04's model is the stand-in of `helpers.backends.standin` (MNIST digits and
Fashion-MNIST items): a prompt naming one of them ("a 7", "six", "a sneaker") embeds as its class, and the
empty prompt as the null class the model was trained with.
"""
import importlib.util
import math

import torch

from helpers.backends import standin

IMAGE_SHAPE = (1, 32, 32)
STEPS, MAX_BETA = 1000, 0.999   # DeepFloyd IF's DDPMScheduler: num_train_timesteps, squaredcos_cap_v2's beta cap
DIFFUSERS_MISSING = ("diffusers is not installed, so DeepFloyd IF and the checks of exercises 4.1-4.8 cannot run "
                     "here (`%pip install diffusers`); the project backend does not need it.")


def deepfloyd_alphas_cumprod() -> torch.Tensor:
    """abar_t, t = 0 .. 999, of DeepFloyd IF's scheduler configuration (float64): the squared-cosine schedule
    abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2 discretised as beta_i = min(1 - abar((i+1)/T) / abar(i/T), 0.999),
    abar_t = prod_{i <= t} (1 - beta_i), in float32 as diffusers' `DDPMScheduler(beta_schedule="squaredcos_cap_v2")`."""
    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - abar((i + 1) / STEPS) / abar(i / STEPS), MAX_BETA) for i in range(STEPS)],
                         dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).double()


def path_time(abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, a + b) for abar: the flow time of x_t and the scale that maps x_t onto the straight path."""
    a, b = abar.sqrt(), (1 - abar).sqrt()
    return b / (a + b), a + b


class FlowNoisePredictor:
    """A class-conditioned velocity model ``model(z, s, labels)`` exposed as ``eps(x_t, t, embedding)``."""

    def __init__(self, model: torch.nn.Module, alphas_cumprod: torch.Tensor | None = None):
        self.model = model.eval()
        self.num_classes = model.config.get("num_classes", 0)
        if not self.num_classes:
            raise ValueError("the project backend needs a class-conditioned flow model (notebook 03's), "
                             "not a time-only one")
        self.alphas_cumprod = deepfloyd_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        self.device = next(model.parameters()).device
        self.name = "project flow model (MNIST digits + Fashion-MNIST)"
        self.image_shape = IMAGE_SHAPE

    def embed(self, prompt: str) -> torch.Tensor:
        """The class label a prompt names (`helpers.backends.standin.label_of`): '' -> the null class; 'a 6' / 'six' -> 6,
        'a sneaker' -> 17 (a model of digits only refuses the items)."""
        label = standin.label_of(prompt)
        if label == standin.NUM_CLASSES:
            return torch.tensor(self.num_classes)
        if label >= self.num_classes:
            raise ValueError(f"this backend's model knows {self.num_classes} classes, the digits only: "
                             f"{prompt!r} names a Fashion-MNIST item; prompt a digit.")
        return torch.tensor(label)

    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: int, embedding: torch.Tensor) -> tuple[torch.Tensor, None]:
        """eps_hat = z + (1 - s) v(z, s, c) with z = x_t / (a + b), s = b / (a + b); no learned variance."""
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"the project backend works on [B, 1, 32, 32] images in [-1, 1], got "
                             f"{list(x_t.shape)}: load images with helpers.foundation.images.load_image(..., size=32, channels=1)")
        s, scale = path_time(self.alphas_cumprod[t])
        s, scale = float(s), float(scale)
        z = x_t / scale
        labels = embedding.to(self.device).reshape(-1).expand(x_t.shape[0])
        v = self.model(z, torch.full((x_t.shape[0],), s, device=x_t.device, dtype=x_t.dtype), labels)
        return z + (1 - s) * v, None


def project_backend(profile: str, device="cpu") -> FlowNoisePredictor:
    """The backend on notebook 04's stand-in for `profile` (`helpers.backends.standin`; trained first if not shipped).
    Says `DIFFUSERS_MISSING` first where diffusers is not installed."""
    if importlib.util.find_spec("diffusers") is None:
        print(DIFFUSERS_MISSING)
    return FlowNoisePredictor(standin.trained_model(profile, device))
