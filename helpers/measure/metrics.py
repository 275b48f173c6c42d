"""Sample quality measured with the project's classifier.

- accuracy: the fraction of samples the classifier assigns to the requested digit;
- confident fraction: the fraction whose top softmax probability exceeds a threshold (for unlabelled samples);
- Frechet distance between Gaussians fitted to classifier features of two image sets:

      FD = || mu_a - mu_b ||^2 + Tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})

  (the FID formula, with the project classifier's 128-d features instead of Inception's).

`trained_classifier` loads that classifier (`helpers.foundation.classifier`), training it first where the run is missing.
"""
import torch
import torch.nn.functional as F

from helpers.foundation.classifier import DigitClassifier
from helpers.foundation.data import load_mnist
from helpers.training import runs
from helpers.training.loop import TrainConfig, train
from helpers.training.profile import settings


@torch.no_grad()
def classify(classifier, images: torch.Tensor, batch_size: int = 1000):
    """(features [N, F], probabilities [N, 10]) of `images`, computed in eval mode, in float64 features."""
    classifier.eval()
    device = next(classifier.parameters()).device
    features, probabilities = [], []
    for start in range(0, len(images), batch_size):
        f = classifier.features(images[start:start + batch_size].to(device))
        features.append(f.double().cpu())
        probabilities.append(classifier.head(f).softmax(-1).cpu())
    return torch.cat(features), torch.cat(probabilities)


def accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    return (probabilities.argmax(-1) == labels.cpu()).float().mean().item()


def confident_fraction(probabilities: torch.Tensor, threshold: float = 0.9) -> float:
    return (probabilities.max(-1).values > threshold).float().mean().item()


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, F] (computed in float64)."""
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross)
    return value.clamp(min=0).item()


def sample_quality(classifier, samples: torch.Tensor, reference_features: torch.Tensor, labels=None) -> dict:
    """Accuracy (if `labels`), fraction classified with confidence > 0.9, and Frechet distance to the reference."""
    features, probabilities = classify(classifier, samples)
    quality = {"confident > 0.9": confident_fraction(probabilities),
               "Frechet distance": frechet_distance(features, reference_features)}
    if labels is not None:
        quality = {"accuracy": accuracy(probabilities, labels), **quality}
    return quality


def real_data_floor(classifier, train_images: torch.Tensor, reference_features: torch.Tensor, count: int,
                    seed: int = 0) -> dict:
    """`sample_quality` of `count` real training images drawn with `seed`: the best any generator can score
    at that sample count (the Frechet distance of a finite sample to the reference is never zero)."""
    chosen = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:count]
    return sample_quality(classifier, train_images[chosen], reference_features)


def agreement(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """Per-image agreement between two image sets [B, C, H, W] (e.g. a machine's and a UNet's outputs).

    r is the Pearson correlation of the mean-subtracted pixels, r = <a - mean a, b - mean b> /
    (|a - mean a| |b - mean b|) (what Kamb and Ganguli's evaluation computes), r^2 its square,
    and mse the mean squared pixel difference. Returns a dict of [B] tensors.
    """
    a = images.flatten(1).double()
    b = reference.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return {"r": r, "r^2": r * r, "mse": (images - reference).flatten(1).double().pow(2).mean(1)}


def classification_loss(model, batch) -> torch.Tensor:
    """Cross-entropy, with a small random shift of up to 2 pixels as augmentation."""
    images, labels = batch
    dx, dy = torch.randint(-2, 3, (2,)).tolist()
    return F.cross_entropy(model(torch.roll(images, (dy, dx), dims=(2, 3))), labels)


def trained_classifier(device="cpu", profile: str | None = None) -> DigitClassifier:
    """The project's digit classifier for `profile`: loaded from ``checkpoints/<profile>/classifier`` if
    finished, else trained there first (a few minutes on a CPU)."""
    images, labels = load_mnist("train")
    return train_classifier((images, labels), runs.CLASSIFIER, 10, device, profile)


def train_classifier(data: tuple, run: str, num_classes: int, device="cpu", profile: str | None = None):
    """A `DigitClassifier` of `num_classes` trained on the first `train_images` of `data` (images, labels) with
    the profile's `classifier` settings, in ``checkpoints/<profile>/<run>`` (loaded if finished)."""
    cfg = settings("classifier", profile)
    model = DigitClassifier(cfg.width, num_classes)
    config = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=0)
    train(model, classification_loss, tuple(t[:cfg.train_images] for t in data), config,
          runs.folder(run, cfg.profile), device=device)
    return model.eval()
