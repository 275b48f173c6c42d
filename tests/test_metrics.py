import numpy as np
import pytest
import torch

from helpers.foundation.classifier import DigitClassifier
from helpers.measure import metrics
from helpers.measure.metrics import accuracy, classify, confident_fraction, frechet_distance


def test_frechet_distance_of_gaussians_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    b = 2.0 * torch.randn(200_000, 3, generator=g, dtype=torch.float64) + 1.0
    # N(0, I) vs N(1, 4 I) in 3-d: |mu|^2 = 3, trace term = 3 * (1 + 4 - 2 * 2) = 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_accuracy_and_confidence():
    p = torch.tensor([[0.95, 0.05] + [0.0] * 8, [0.6, 0.4] + [0.0] * 8])
    assert accuracy(p, torch.tensor([0, 1])) == 0.5
    assert confident_fraction(p, 0.9) == 0.5


def test_classifier_shapes_and_input_check():
    model = DigitClassifier(width=4)
    features, probabilities = classify(model, torch.randn(5, 1, 32, 32))
    assert features.shape == (5, 128) and probabilities.shape == (5, 10)
    assert torch.allclose(probabilities.sum(-1), torch.ones(5))
    with pytest.raises(ValueError, match=r"\[B, 1, 32, 32\]"):
        model(torch.randn(5, 1, 28, 28))


@pytest.mark.slow
def test_real_data_floor_is_the_quality_of_a_seeded_real_subset():
    model = DigitClassifier(width=4)
    images = torch.randn(40, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    reference, _ = classify(model, images)
    floor = metrics.real_data_floor(model, images, reference, 20, seed=3)
    chosen = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:20]
    assert floor == metrics.sample_quality(model, images[chosen], reference)
    assert floor != metrics.real_data_floor(model, images, reference, 20, seed=4)


def test_agreement_is_pearson_correlation_and_mse():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 1, 4, 4, generator=g)
    result = metrics.agreement(a, 2 * a + 1)
    assert torch.allclose(result["r"], torch.ones(3, dtype=torch.float64))
    assert torch.allclose(metrics.agreement(a, -a)["r^2"], torch.ones(3, dtype=torch.float64))
    b = torch.randn(3, 1, 4, 4, generator=g)
    expected = torch.tensor([np.corrcoef(x.flatten(), y.flatten())[0, 1] for x, y in zip(a, b)], dtype=torch.float64)
    assert torch.allclose(metrics.agreement(a, b)["r"], expected)
    assert torch.allclose(result["mse"], ((a + 1) ** 2).flatten(1).mean(1).double())
