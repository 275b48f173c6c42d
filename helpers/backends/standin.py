"""Notebook 04's offline stand-in for DeepFloyd IF: one class-conditioned flow model of MNIST digits and
Fashion-MNIST items, whose 20 classes a prompt names, and a classifier that reads its pictures.

    classes 0-9    the digits, prompted as "a 7", "a photo of the digit 7" or "seven"
    classes 10-19  the items "a T-shirt", "a trouser", "a pullover", "a dress", "a coat", "a sandal",
                   "a shirt", "a sneaker", "a bag", "an ankle boot"
    class 20       the empty prompt: the null class of classifier-free guidance

The model is notebook 03's (`ConditionalCourseUNet`, the flow-matching loss with p_uncond = 0.1), trained on
both datasets at once; `helpers.backends.flow_backend` reads it as a DDPM noise predictor, so every trick of
`helpers.diffusion` runs on it unchanged. Clothes beside digits give the tricks room to show their effect on
32 x 32 pictures: a sneaker's toe painted as a 7, a 6 that is a 9 upside down, a drawn house made a bag.

Used in notebook 04 (section 0, the backend).
"""
import re

import torch

from helpers import flow_matching
from helpers.course_unet import ConditionalCourseUNet
from helpers.foundation.classifier import DigitClassifier
from helpers.foundation.data import FASHION_ITEMS, load_mnist
from helpers.measure.metrics import train_classifier
from helpers.training import runs
from helpers.training.loop import TrainConfig, train
from helpers.training.profile import settings

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLASS_NAMES = tuple(str(d) for d in range(10)) + FASHION_ITEMS
NUM_CLASSES = len(CLASS_NAMES)


def load_data(split: str = "train", count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits (labels 0-9) and Fashion-MNIST items (labels 10-19), 32 x 32 in [-1, 1], alternating
    digit, item, digit, ... so that the first `count` hold as many of each (all of both by default)."""
    digits, digit_labels = load_mnist(split)
    items, item_labels = load_mnist(split, dataset="fashion-mnist")
    n = len(digits) if count is None else (count + 1) // 2
    images = torch.stack([digits[:n], items[:n]], 1).flatten(0, 1)
    labels = torch.stack([digit_labels[:n], item_labels[:n] + 10], 1).flatten()
    return images[:count], labels[:count]


def _names_pattern(name: str) -> str:
    return rf"(?<![\w-]){re.escape(name.lower())}s?(?![\w-])"


def label_of(prompt: str) -> int:
    """The class a prompt names: '' -> NUM_CLASSES (the null class), 'a photo of the digit 6' / 'six' -> 6,
    'a sneaker' -> 17. A prompt must name exactly one digit or item."""
    text = prompt.strip().lower()
    if not text:
        return NUM_CLASSES
    found = set()
    for label in sorted(range(10, NUM_CLASSES), key=lambda k: -len(CLASS_NAMES[k])):  # "T-shirt" before "shirt"
        if re.search(_names_pattern(CLASS_NAMES[label]), text):
            found.add(label)
            text = re.sub(_names_pattern(CLASS_NAMES[label]), " ", text)
    found |= {int(d) for d in re.findall(r"\d", text)}
    found |= {i for i, word in enumerate(DIGIT_WORDS) if re.search(rf"\b{word}\b", text)}
    if len(found) != 1:
        names = ", ".join(repr(CLASS_NAMES[k]) for k in sorted(found)) or "none"
        raise ValueError(f"the project backend understands prompts that name exactly one digit or one of "
                         f"{', '.join(FASHION_ITEMS)}, such as 'a 7' or 'a sneaker'; {prompt!r} names {names}.")
    return found.pop()


def trained_model(profile: str | None = None, device="cpu") -> ConditionalCourseUNet:
    """The stand-in for `profile`: loaded from ``checkpoints/<profile>/flow_class_digits_fashion`` if finished,
    else trained there first (the `standin` settings of helpers/training/profile.py)."""
    cfg = settings("standin", profile)
    model = ConditionalCourseUNet(hidden=cfg.hidden, image_size=32, num_classes=NUM_CLASSES)
    config = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=0,
                         lr_decay_over_run=cfg.lr_decay_over_run)
    train(model, flow_matching.training_loss(p_uncond=cfg.p_uncond), load_data("train", cfg.train_images), config,
          runs.folder(runs.STANDIN, cfg.profile), device=device)
    return model.eval()


def trained_classifier(profile: str | None = None, device="cpu") -> DigitClassifier:
    """A classifier of the 20 classes, to measure what the tricks draw: loaded from
    ``checkpoints/<profile>/classifier_digits_fashion`` if finished, else trained there first."""
    return train_classifier(load_data("train", settings("classifier", profile).train_images),
                            runs.STANDIN_CLASSIFIER, NUM_CLASSES, device, profile)


def test_image(prompt: str) -> torch.Tensor:
    """The first test picture of the class `prompt` names, [1, 1, 32, 32] in [-1, 1] (e.g. notebook 04's sneaker)."""
    images, labels = load_data("test")
    return images[labels == label_of(prompt)][:1]
