"""Build any workbook model from the config stored in its checkpoint, and load trained weights."""
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .attention_unet import AttentionUNet
from .classifier import DigitClassifier
from .course_unet import ConditionalCourseUNet, CourseUNet

MODELS = {cls.__name__: cls for cls in (CourseUNet, ConditionalCourseUNet, AttentionUNet, DigitClassifier)}


def build(config: dict) -> torch.nn.Module:
    """A fresh model from a config dict such as ``{"name": "AttentionUNet", "hidden": 32, ...}``."""
    name = config.get("name")
    if name not in MODELS:
        raise ckpt.CheckpointError(f"unknown model {name!r} in checkpoint config; known: {', '.join(MODELS)}")
    return MODELS[name](**{k: v for k, v in config.items() if k != "name"})


def run_folder(path) -> Path:
    """The training run's folder, given the folder itself or one of its checkpoint files."""
    path = Path(path)
    return path if path.is_dir() or not path.suffix else path.parent


def load_trained(path, device="cpu", made_by: str = "its training cell", weights: str = "model") -> torch.nn.Module:
    """The model stored in a finished training run's ``last.pt`` (or a run folder), in eval mode.

    `made_by` names what trains it, for the error when it is missing (e.g. "notebook 02"). `weights` is
    ``"model"`` (the optimizer's last weights) or ``"ema"`` (their exponential moving average)."""
    if weights not in ("model", "ema"):
        raise ValueError(f"weights must be 'model' or 'ema', not {weights!r}")
    path = Path(path)
    if path == run_folder(path):
        path = path / "last.pt"
    if not path.exists():
        raise ckpt.CheckpointError(f"no trained model at {path}: run {made_by} first, in the same profile "
                                   f"(WORKBOOK_PROFILE), to train it.")
    state = ckpt.load(path, device)
    if "config" not in state or "model" not in state:
        raise ckpt.CheckpointError(f"{path} is not a training checkpoint of this workbook (no config or weights).")
    epochs = state["config"]["train"]["epochs"]
    if state["epoch"] < epochs:
        raise ckpt.CheckpointError(
            f"{path} is unfinished (epoch {state['epoch']} of {epochs}): run its training cell again to finish it.")
    if weights not in state:
        raise ckpt.CheckpointError(f"{path} holds no {weights!r} weights (it predates weight averaging): "
                                   "retrain it (WORKBOOK_RETRAIN=1) to get them.")
    model = build(state["config"]["model"]).to(device)
    ckpt.load_weights(model, state[weights], path)
    return model.eval()
