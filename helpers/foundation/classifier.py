"""A small MNIST classifier, trained in the project, used to measure generated samples.

Input: 32 x 32 digits in [-1, 1]. Three conv stages (w, 2w, 4w channels, each conv + BatchNorm + ReLU
followed by 2 x 2 max-pooling: 32 -> 16 -> 8 -> 4), a linear layer from the 4 x 4 map to a 128-d feature
vector (ReLU), and a linear layer to 10 logits. Keeping the 4 x 4 layout (rather than pooling it away)
matters: a digit is defined by where its strokes are. `features` is the layer the Frechet distance of
`helpers.measure.metrics` uses.
"""
import torch
from torch import nn


class DigitClassifier(nn.Module):
    """`num_classes` logits (MNIST's 10 by default; notebook 04's stand-in reads 20, `helpers.backends.standin`). The
    config records `num_classes` only when it is not 10, so the shipped digit classifier's config stays valid."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.config = dict(name="DigitClassifier", width=width, **({} if num_classes == 10 else
                                                                  {"num_classes": num_classes}))

        def stage(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        self.body = nn.Sequential(stage(1, width), nn.MaxPool2d(2), stage(width, 2 * width), nn.MaxPool2d(2),
                                  stage(2 * width, 4 * width), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(4 * width * 16, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 32, 32):
            raise ValueError(f"DigitClassifier expects [B, 1, 32, 32] digits in [-1, 1], got {list(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
