"""Flow matching on the straight path from data (t = 0) to noise (t = 1).

    x_t = (1 - t) x0 + t x1,   x0 ~ data,  x1 ~ N(0, I),  t ~ U[0, 1]  (or logit-normal: t = sigmoid(n), n ~ N(0, 1))
    target velocity  v = d x_t / d t = x1 - x0,   loss = E || v_theta(x_t, t, c) - (x1 - x0) ||^2

Sampling integrates dx/dt = v from t = 1 to t = 0. Euler with T steps: ``x <- x - v_hat / T``.
Heun (second order, trapezoidal): ``x' = x - h v(x, t)``, ``x <- x - h/2 (v(x, t) + v(x', t - h))``;
its last step (to t = 0) is an Euler step, as in EDM, so the model is never asked for v at t = 0.
Classifier-free guidance: ``v_hat = v(x, t, null) + gamma (v(x, t, c) - v(x, t, null))``, with the class
dropped to the null label with probability ``p_uncond`` during training.
Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"), which also works
for a time-only model: ``v_hat = v_guide(x, t, c) + w (v(x, t, c) - v_guide(x, t, c))``, where the guide is a
weaker model of the same data (here an early snapshot of the same run). Where the two disagree, the weak model's
errors are the likely ones, and w > 1 steps away from them.
"""
import torch
import torch.nn.functional as F


class FlowMatching:
    """Loss and samplers around a velocity model ``model(x_t, t, labels=None)``."""

    TIME_SAMPLINGS = ("uniform", "logit_normal")

    def __init__(self, model: torch.nn.Module, num_classes: int = 0, p_uncond: float = 0.1,
                 time_sampling: str = "uniform"):
        if time_sampling not in self.TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {self.TIME_SAMPLINGS}, not {time_sampling!r}")
        self.model, self.num_classes, self.p_uncond = model, num_classes, p_uncond
        self.time_sampling = time_sampling

    @property
    def null_label(self) -> int:
        return self.num_classes

    def loss(self, x0: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """MSE between the predicted and the true velocity at a random time of the straight path."""
        x1 = torch.randn_like(x0)
        t = self.training_times(x0.shape[0], x0.device, x0.dtype)
        tb = t.view(-1, *[1] * (x0.dim() - 1))
        x_t = (1 - tb) * x0 + tb * x1
        if self.num_classes:
            drop = torch.rand(labels.shape, device=labels.device) < self.p_uncond
            labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
            prediction = self.model(x_t, t, labels)
        else:
            prediction = self.model(x_t, t)
        return F.mse_loss(prediction, x1 - x0)

    def training_times(self, n: int, device, dtype) -> torch.Tensor:
        """n times in (0, 1): uniform, or logit-normal (Esser et al. 2024), which trains mid-path times most,
        where the sample's identity is decided, and the nearly trivial ends least."""
        if self.time_sampling == "logit_normal":
            return torch.sigmoid(torch.randn(n, device=device, dtype=dtype))
        return torch.rand(n, device=device, dtype=dtype)

    def training_loss(self, model, batch) -> torch.Tensor:
        """The hook `helpers.training.train` calls: batch = (images,) or (images, labels)."""
        return self.loss(*batch)

    def velocity(self, x, t, labels=None, guidance: float = 1.0, guide: torch.nn.Module | None = None) -> torch.Tensor:
        """Velocity at (x, t): with a `guide` model, autoguided with weight `guidance`; otherwise, when labels
        are given, with classifier-free guidance of scale `guidance`."""
        t = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        if guide is not None:
            strong = self._evaluate(self.model, x, t, labels)
            if guidance == 1.0:
                return strong
            weak = self._evaluate(guide, x, t, labels)
            return weak + guidance * (strong - weak)
        if guidance == 0.0:
            labels = None  # gamma = 0 is the unconditional velocity
        if not self.num_classes or labels is None or guidance == 1.0:
            return self._evaluate(self.model, x, t, labels)
        null = torch.full((x.shape[0],), self.null_label, device=x.device, dtype=torch.long)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    def _evaluate(self, network, x, t, labels):
        """`network`'s velocity, given the labels when this is a class-conditioned flow (the null label if none)."""
        if not self.num_classes:
            return network(x, t)
        if labels is None:
            labels = torch.full((x.shape[0],), self.null_label, device=x.device, dtype=torch.long)
        return network(x, t, labels)

    @torch.no_grad()
    def sample(self, x1: torch.Tensor, steps: int = 50, labels=None, guidance: float = 1.0,
               method: str = "euler", return_trajectory: bool = False, guide: torch.nn.Module | None = None):
        """Integrate from the noise `x1` at t = 1 to t = 0 in `steps` steps ('euler' or 'heun').

        With a `guide` model, `guidance` is the autoguidance weight w (see `velocity`).
        Returns the samples, or ``(samples, trajectory)`` with the trajectory [steps + 1, *x1.shape].
        """
        if method not in ("euler", "heun"):
            raise ValueError(f"method must be 'euler' or 'heun', not {method!r}")
        self.model.eval()
        if guide is not None:
            guide.eval()
        x, h = x1, 1.0 / steps
        trajectory = [x.cpu()] if return_trajectory else None
        for i in range(steps):
            t = 1.0 - i * h
            v = self.velocity(x, t, labels, guidance, guide)
            if method == "heun" and i < steps - 1:
                v = 0.5 * (v + self.velocity(x - h * v, t - h, labels, guidance, guide))
            x = x - h * v
            if return_trajectory:
                trajectory.append(x.cpu())
        return (x, torch.stack(trajectory)) if return_trajectory else x

    @staticmethod
    def evaluations(steps: int, method: str) -> int:
        """Model evaluations per sample (a guided evaluation counts once)."""
        return 2 * steps - 1 if method == "heun" else steps
