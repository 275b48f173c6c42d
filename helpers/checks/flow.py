"""Checks of flow matching (exercises 2.2, 2.3, 3.2) with small models whose answers are known: a model
that records what it is given, and the exact velocity of a one-point data set x0 = c, v(x, t) = (x - c) / t."""
import torch
from torch import nn

from helpers.checks.core import close, fail, grades


class Recorder(nn.Module):
    """model(x_t, t[, labels]) -> respond(x_t, t, labels), remembering every call's inputs."""

    def __init__(self, respond, num_classes: int = 0):
        super().__init__()
        self.config, self.respond, self.calls = {"num_classes": num_classes}, respond, []
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, labels=None):
        self.calls.append((x_t.detach().clone(), t, labels))
        return self.respond(x_t, t, labels) + self.weight


@grades("2.2")
def flow_matching_loss(loss):
    """loss(model, x0, labels=None, p_uncond=0.1, time_sampling="uniform"): x_t = (1 - t) x0 + t x1, t ~ U[0, 1]
    per sample, MSE of model(x_t, t) against x1 - x0; labels dropped to the null label with probability p_uncond."""
    c, n = 2.0, 256
    x0 = torch.full((n, 1, 4, 4), c)
    model = Recorder(lambda x_t, t, labels: x_t)
    value = loss(model, x0)
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        fail("the loss must be a scalar tensor: the mean squared error over pixels and batch")
    x_t, t, _ = model.calls[-1]
    if not isinstance(t, torch.Tensor) or t.shape != (n,):
        fail(f"the model got t of shape {list(getattr(t, 'shape', []))}: pass one time per sample, shape [B]")
    if t.min() < 0 or t.max() > 1 or t.std() < 0.2 or abs((t < 0.1).float().mean() - 0.1) > 0.06:
        fail("t must be drawn uniformly from [0, 1], independently for each sample")
    tb = t.view(-1, 1, 1, 1)
    x1 = (x_t - (1 - tb) * c) / tb  # the noise that x_t implies on the straight path
    if abs(x1.mean()) > 0.15 or abs(x1.std() - 1) > 0.15:
        swapped = (x_t - tb * c) / (1 - tb)
        if abs(swapped.mean()) < 0.15 and abs(swapped.std() - 1) < 0.15:
            fail("x_t has the weights of data and noise swapped: x_t = (1 - t) x0 + t x1 is the data at t = 0")
        fail("x_t is not (1 - t) x0 + t x1 with standard normal noise x1")
    if not close(value, (x_t - (x1 - c)).pow(2).mean(), 1e-3):
        if close(value, (x_t - (c - x1)).pow(2).mean(), 1e-3):
            fail("the velocity target has the wrong sign: along x_t = (1 - t) x0 + t x1 it is d x_t / dt = x1 - x0")
        if close(value, (x_t - x1).pow(2).mean(), 1e-3):
            fail("the velocity target misses the data term: it is x1 - x0, not the noise alone")
        if close(value, (x_t - (x1 - c)).pow(2).sum(), 1e-3):
            fail("the loss sums the squared errors: take their mean (F.mse_loss)")
        fail("the loss is not the mean squared error between model(x_t, t) and x1 - x0")
    model = Recorder(lambda x_t, t, labels: torch.zeros_like(x_t))
    loss(model, x0, time_sampling="logit_normal")
    t = model.calls[-1][1]
    if (t < 0.1).float().mean() > 0.05 or abs(t.mean() - 0.5) > 0.06:
        fail("time_sampling='logit_normal' must draw t = sigmoid(n) with n ~ N(0, 1)")
    _check_label_dropout(loss)


def _check_label_dropout(loss):
    n, null = 400, 10
    model = Recorder(lambda x_t, t, labels: torch.zeros_like(x_t), num_classes=null)
    labels = torch.full((n,), 3)
    loss(model, torch.zeros(n, 1, 2, 2), labels, p_uncond=0.5)
    got = model.calls[-1][2]
    if got is None:
        fail("a class-conditioned model must be given labels: call model(x_t, t, labels)")
    if not torch.equal(labels, torch.full((n,), 3)):
        fail("the loss changed the caller's labels in place: drop labels in a new tensor")
    others = got[(got != 3) & (got != null)]
    if len(others):
        fail(f"dropped labels must become the null label model.config['num_classes'] (here {null}), "
             f"not {others[0].item()}")
    dropped = (got == null).float().mean().item()
    if dropped == 0:
        fail("no label was dropped: replace each label by the null label with probability p_uncond")
    if abs(dropped - 0.5) > 0.1:
        fail(f"{dropped:.0%} of the labels were dropped at p_uncond = 0.5: drop each one independently "
             f"with probability p_uncond")
    loss(model, torch.zeros(n, 1, 2, 2), labels, p_uncond=0.0)
    if (model.calls[-1][2] == null).any():
        fail("labels were dropped at p_uncond = 0: drop with probability p_uncond, not always")


@grades("2.3")
def euler_step(euler_step):
    """euler_step(velocity, x, t, h, labels=None) = x - h * velocity(x, t[, labels]), t the current time."""
    calls = []

    def constant(x, t, labels=None):
        calls.append((t, labels))
        return torch.full_like(x, 2.0)

    x = torch.randn(3, 1, 4, 4)
    out = euler_step(constant, x, 0.75, 0.25)
    if abs(float(calls[-1][0]) - 0.75) > 1e-6:
        if abs(float(calls[-1][0]) - 0.5) < 1e-6:
            fail("the velocity must be evaluated at the current time t, not at t - h: the step goes from t to t - h")
        fail(f"the velocity was evaluated at t = {float(calls[-1][0]):g}, not at the current time 0.75")
    if close(out, x + 0.5):
        fail("the step goes the wrong way: integration runs from t = 1 to t = 0, so x moves by -h v")
    if not close(out, x - 0.5):
        fail("an Euler step must move x by h times the velocity, x - h v")
    labels = torch.tensor([1, 2, 3])
    euler_step(constant, x, 0.75, 0.25, labels)
    if calls[-1][1] is None or not torch.equal(calls[-1][1], labels):
        fail("pass the labels on to the velocity: velocity(x, t, labels)")
    c, steps = torch.randn(1, 1, 4, 4), 4
    x = torch.randn(3, 1, 4, 4)
    for i in range(steps):
        x = euler_step(lambda y, t, labels=None: (y - c) / t, x, 1.0 - i / steps, 1.0 / steps)
    if not close(x, c.expand_as(x), 1e-4):
        fail("Euler steps from t = 1 to 0 with the exact velocity of a one-point data set do not land on it")


class _LabelEcho(nn.Module):
    """A class-conditioned 'velocity' equal to its label, everywhere: guidance's arithmetic becomes visible."""

    def __init__(self):
        super().__init__()
        self.config, self.seen = {"num_classes": 10}, []

    def forward(self, x, t, labels):
        self.seen.append((t, labels.clone()))
        return labels.to(x.dtype).view(-1, *[1] * (x.dim() - 1)).expand_as(x).clone()


@grades("3.2")
def classifier_free_guidance(classifier_free):
    """classifier_free(model, gamma)(x, t, labels) = v(x, t, null) + gamma (v(x, t, c) - v(x, t, null))."""
    model, x, t = _LabelEcho(), torch.zeros(2, 1, 2, 2), 0.5
    labels = torch.tensor([3, 7])
    out = classifier_free(model, 5.0)(x, t, labels)
    seen = torch.cat([s for _, s in model.seen])
    if not torch.equal(labels, torch.tensor([3, 7])):
        fail("guidance changed the caller's labels in place")
    if not (seen == 10).any():
        wrong = sorted(set(seen.tolist()) - {3, 7})
        fail("the unconditional velocity must use the null label model.config['num_classes'] (10)"
             + (f", not {wrong[0]}" if wrong else ""))
    if any(not torch.equal(torch.as_tensor(s), torch.as_tensor(t)) for s, _ in model.seen):
        fail("pass t on to the model unchanged")
    want = torch.tensor([10 + 5 * (3 - 10), 10 + 5 * (7 - 10)], dtype=x.dtype).view(2, 1, 1, 1).expand_as(x)
    if not close(out, want):
        if close(out, torch.tensor([3 + 5 * 7, 7 + 5 * 3], dtype=x.dtype).view(2, 1, 1, 1).expand_as(x)):
            fail("guidance starts from the wrong end: start at v(x, t, null) and add gamma (v(x, t, c) - v(x, t, null))")
        if close(out, want - 10):
            fail("the guided velocity misses its base term v(x, t, null)")
        fail("the guided velocity is not v(null) + gamma (v(c) - v(null)) for gamma = 5")
    if not close(classifier_free(_LabelEcho(), 1.0)(x, t, labels), labels.view(2, 1, 1, 1).expand_as(x).float()):
        fail("gamma = 1 must give the conditional velocity v(x, t, c)")
