"""Flow matching: the loss's interpolation and target, the samplers on velocities known exactly, and guidance."""
import itertools

import pytest
import torch

from helpers import flow_matching, guidance, samplers
from helpers.attention_unet import AttentionUNet, sinusoidal_embedding
from helpers.course_unet import ConditionalCourseUNet


class Recorder(torch.nn.Module):
    """Returns zeros and remembers its inputs."""

    config = {"name": "Recorder", "num_classes": 10}

    def forward(self, x, t, labels=None):
        self.seen = (x, t, labels)
        return torch.zeros_like(x)


def test_loss_builds_the_straight_path_and_its_velocity():
    model = Recorder()
    x0 = torch.randn(6, 1, 4, 4)
    torch.manual_seed(0)
    loss = flow_matching.loss(model, x0)
    torch.manual_seed(0)
    x1, t = torch.randn_like(x0), torch.rand(6)
    x_t, seen_t, _ = model.seen
    assert torch.allclose(seen_t, t)
    assert torch.allclose(x_t, (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1)
    assert torch.allclose(loss, ((x1 - x0) ** 2).mean())  # the model predicted zero velocity


def test_logit_normal_times_concentrate_mid_path():
    """t = sigmoid(n), n ~ N(0, 1): P(sigmoid(-1) < t < sigmoid(1)) = P(|n| < 1) = 0.683; uniform gives 0.462."""
    inner = lambda t: ((t > torch.sigmoid(torch.tensor(-1.0))) & (t < torch.sigmoid(torch.tensor(1.0)))).float().mean()
    torch.manual_seed(0)
    logit_normal = flow_matching.training_times(100_000, "cpu", torch.float32, "logit_normal")
    uniform = flow_matching.training_times(100_000, "cpu", torch.float32)
    assert 0.0 < logit_normal.min() and logit_normal.max() < 1.0
    assert abs(inner(logit_normal) - 0.683) < 0.01 and abs(inner(uniform) - 0.462) < 0.01
    with pytest.raises(ValueError, match="time_sampling must be one of"):
        flow_matching.training_loss(time_sampling="cosine")


def test_minibatch_ot_pairs_noises_at_least_total_distance():
    """The OT coupling reorders the batch's noises (a permutation of the same draws) to the pairing of least
    total squared distance: checked against all 5! pairings, and the loss trains on exactly that pairing."""
    x0 = torch.randn(5, 1, 3, 3)
    torch.manual_seed(1)
    x1 = flow_matching.minibatch_ot_noise(x0)
    torch.manual_seed(1)
    drawn = torch.randn_like(x0)
    assert sorted(x1.flatten().tolist()) == sorted(drawn.flatten().tolist())
    cost = lambda pairs: sum(float((x0[i] - drawn[j]).pow(2).sum()) for i, j in enumerate(pairs))
    best = min(cost(p) for p in itertools.permutations(range(5)))
    assert abs(float((x0 - x1).pow(2).sum()) - best) < 1e-4
    model = Recorder()
    torch.manual_seed(1)
    flow_matching.training_loss(coupling="minibatch_ot")(model, (x0,))
    torch.manual_seed(1)
    flow_matching.minibatch_ot_noise(x0)
    t = torch.rand(5).view(-1, 1, 1, 1)
    assert torch.allclose(model.seen[0], (1 - t) * x0 + t * x1)
    with pytest.raises(ValueError, match="coupling must be one of"):
        flow_matching.training_loss(coupling="sinkhorn")


def test_class_dropout_uses_the_null_label():
    model = Recorder()
    torch.manual_seed(0)
    flow_matching.loss(model, torch.randn(10_000, 1, 1, 1), torch.zeros(10_000, dtype=torch.long), p_uncond=0.1)
    dropped = (model.seen[2] == 10).float().mean().item()
    assert 0.09 < dropped < 0.11 and set(model.seen[2].unique().tolist()) == {0, 10}


def point_mass(target):
    """Exact velocity when all data is one image x*: v(x, t) = (x - x*) / t."""
    return lambda x, t, labels=None: (x - target) / t


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_samplers_land_on_a_single_data_point(method):
    target = torch.randn(1, 1, 4, 4)
    samples, trajectory = samplers.integrate(point_mass(target), torch.randn(3, 1, 4, 4), steps=7, method=method,
                                             return_trajectory=True)
    assert trajectory.shape == (8, 3, 1, 4, 4)
    assert torch.allclose(samples, target.expand(3, -1, -1, -1), atol=1e-5)


def gaussian(s):
    """Exact velocity for data ~ N(0, s^2): x_t = a x0 + t x1 with a = 1 - t, v = (t - a s^2) x / (a^2 s^2 + t^2)."""
    return lambda x, t, labels=None: (t - (1 - t) * s ** 2) * x / ((1 - t) ** 2 * s ** 2 + t ** 2)


def test_heun_is_more_accurate_than_euler_at_equal_steps():
    s, x1 = 0.5, torch.randn(4096, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    exact = s * x1  # the exact flow map of this linear ODE sends x1 to s * x1
    euler = (samplers.integrate(gaussian(s), x1, steps=8, method="euler") - exact).abs().max()
    heun = (samplers.integrate(gaussian(s), x1, steps=8, method="heun") - exact).abs().max()
    assert heun < euler / 5


class Labelled(torch.nn.Module):
    """Velocity = label value (null label 10 -> 100), to check how CFG mixes the two."""

    config = {"name": "Labelled", "num_classes": 10}

    def forward(self, x, t, labels):
        return torch.where(labels == 10, 100.0, labels.float()).view(-1, 1, 1, 1).expand_as(x).clone()


def test_classifier_free_guidance_combination():
    x, labels = torch.zeros(2, 1, 2, 2), torch.tensor([3, 7])
    cfg = lambda gamma: guidance.classifier_free(Labelled(), gamma)(x, 0.5, labels)[:, 0, 0, 0]
    assert torch.equal(cfg(1.0), torch.tensor([3.0, 7.0]))
    assert torch.equal(cfg(0.0), torch.tensor([100.0, 100.0]))
    assert torch.allclose(cfg(5.0), 100 + 5 * (torch.tensor([3.0, 7.0]) - 100))
    with pytest.raises(ValueError, match="needs the labels"):
        guidance.classifier_free(Labelled(), 5.0)(x, 0.5, None)
    with pytest.raises(ValueError, match="is time-only"):
        guidance.classifier_free(ConditionalCourseUNet(hidden=4, image_size=8), 5.0)


class Constant(torch.nn.Module):
    """Velocity = a constant (plus the label value, if any), to check how autoguidance mixes two models."""

    config = {"name": "Constant"}

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, t, labels=None):
        shift = 0.0 if labels is None else labels.float().view(-1, 1, 1, 1)
        return torch.full_like(x, self.value) + shift


def test_autoguidance_steps_away_from_the_weak_model():
    x = torch.zeros(2, 1, 2, 2)
    auto = lambda w: guidance.autoguided(Constant(3.0), Constant(1.0), w)
    assert torch.equal(auto(1.0)(x, 0.5), torch.full_like(x, 3.0))
    assert torch.equal(auto(2.5)(x, 0.5), torch.full_like(x, 1 + 2.5 * 2))
    # with labels, both models see the requested labels, not the null label
    guided = auto(2.0)(x, 0.5, torch.tensor([2, 4]))[:, 0, 0, 0]
    assert torch.equal(guided, torch.tensor([1 + 2 + 2 * 2.0, 1 + 4 + 2 * 2.0]))
    # either sampler, under a constant velocity, moves by exactly that velocity from t = 1 to t = 0
    for method in ("euler", "heun"):
        samples = samplers.integrate(auto(3.0), x, 4, method=method)
        assert torch.allclose(samples, torch.full_like(x, -(1 + 3 * 2)))
    with pytest.raises(ValueError, match="same architecture"):
        guidance.autoguided(ConditionalCourseUNet(hidden=4, image_size=8), ConditionalCourseUNet(hidden=8, image_size=8),
                            2.0)


@pytest.mark.slow
def test_sample_is_reproducible_and_rejects_unknown_methods():
    torch.manual_seed(0)
    velocity = guidance.classifier_free(ConditionalCourseUNet(hidden=4, image_size=8, num_classes=10).eval(), 5.0)
    x1, labels = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    assert torch.equal(samplers.integrate(velocity, x1, 3, labels), samplers.integrate(velocity, x1, 3, labels))
    with pytest.raises(ValueError, match="'euler' or 'heun'"):
        samplers.integrate(velocity, x1, 3, labels, method="rk4")


def test_generate_draws_the_same_noise_whatever_the_batch_size():
    velocity = gaussian(0.5)  # acts on each sample alone, so only the noise can make batches differ
    one = samplers.generate(velocity, 7, (1, 8, 8), 2, seed=3, batch_size=7)
    split = samplers.generate(velocity, 7, (1, 8, 8), 2, seed=3, batch_size=2)
    direct = samplers.integrate(velocity, torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(3)), 2)
    assert torch.equal(one, split) and torch.equal(one, direct.clamp(-1, 1))


@pytest.mark.parametrize("make", [
    lambda: ConditionalCourseUNet(hidden=8, image_size=32, num_classes=10),
    lambda: AttentionUNet(hidden=8, image_size=32, num_classes=10),
])
@pytest.mark.slow
def test_class_conditioned_unets(make):
    torch.manual_seed(0)
    model = make().eval()
    x, t = torch.randn(2, 1, 32, 32), torch.rand(2)
    out = model(x, t, torch.tensor([1, 10]))
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, t, torch.tensor([2, 10])))  # the label matters
    with pytest.raises(ValueError, match="pass labels"):
        model(x, t)


def test_sinusoidal_embedding_is_log_spaced():
    emb = sinusoidal_embedding(torch.tensor([0.0, 0.5]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(emb[1, 0], torch.sin(torch.tensor(0.5)))  # lowest frequency is 1
    assert torch.allclose(emb[1, 3], torch.sin(torch.tensor(500.0)), atol=1e-4)  # highest is 1000
