"""Training runs: their names, where they live, building a network from its config, and loading its weights.

The rule every network of the workbook follows: it carries ``.config``, a dict of its constructor's arguments
plus ``"name"``, its class name. `build(config)` makes a fresh network from it, and every checkpoint stores it,
so a run folder alone says what it holds.

A run lives in ``checkpoints/<profile>/<name>/`` (`folder`):

- ``last.pt``: weights, their moving average (``ema``) and the loss history; while training is unfinished, also
  the optimizer's state, so a rerun resumes (`helpers.training.loop`);
- ``epoch_XXX.pt``: the weights (fp16) after the epochs a figure needs; the last epoch's are ``last.pt`` itself.

`load` reads any of them: the last weights, their moving average, or the snapshot after one epoch.
"""
import os
from pathlib import Path

import torch

from helpers.attention_denoiser import AttentionDenoiser
from helpers.attention_unet import AttentionUNet
from helpers.course_unet import ConditionalCourseUNet, CourseUNet
from helpers.foundation import checkpoint_files as ckpt
from helpers.foundation.classifier import DigitClassifier

# Where runs live: checkpoints/ of this repository, or WORKBOOK_CHECKPOINTS (the set-up cell's Drive switch points it
# at Google Drive on Colab, so that training resumes on a new VM).
ROOT = Path(os.environ.get("WORKBOOK_CHECKPOINTS") or Path(__file__).resolve().parents[2] / "checkpoints")

# The runs the notebooks train, and which notebook trains each (named in the error when one is missing).
DENOISER = "denoiser_sigma0.5"
PURE_NOISE_DENOISER = "denoiser_pure_noise"
HOMEWORK_DENOISER = "denoiser_sigma0.5_attention"
HOMEWORK_PURE_NOISE_DENOISER = "denoiser_pure_noise_attention"
FLOW_TIME_COURSE = "flow_time_course"
FLOW_TIME_ATTENTION = "flow_time_attention"
FLOW_CLASS_DECAY = "flow_class_course_decay"
FLOW_CLASS_CLIP = "flow_class_course_clip"
FLOW_CLASS_ATTENTION = "flow_class_attention"
CLASSIFIER = "classifier"
LOCALITY = "locality_flow_time_course"
STANDIN = "flow_class_digits_fashion"
STANDIN_CLASSIFIER = "classifier_digits_fashion"
MADE_BY = {DENOISER: "notebook 01", PURE_NOISE_DENOISER: "notebook 01", HOMEWORK_DENOISER: "notebook 01",
           HOMEWORK_PURE_NOISE_DENOISER: "notebook 01", FLOW_TIME_COURSE: "notebook 02",
           FLOW_TIME_ATTENTION: "notebook 02", FLOW_CLASS_DECAY: "notebook 03", FLOW_CLASS_CLIP: "notebook 03",
           FLOW_CLASS_ATTENTION: "notebook 03", CLASSIFIER: "notebook 02", LOCALITY: "notebook 05", STANDIN: "notebook 04",
           STANDIN_CLASSIFIER: "notebook 04"}

MODELS = {cls.__name__: cls for cls in (CourseUNet, ConditionalCourseUNet, AttentionUNet, AttentionDenoiser,
                                        DigitClassifier)}
VELOCITY_MODELS = ("ConditionalCourseUNet", "AttentionUNet")


def folder(name: str, profile: str) -> Path:
    """Folder of one training run: ``checkpoints/<profile>/<name>/``."""
    return ROOT / profile / name


def of_length(name: str, epochs: int) -> str:
    """The name of run `name` trained for `epochs` epochs instead, ``<name>_<epochs>epochs`` (notebook 02's
    longer-training comparison, section 4; benchmarks/longer_training.py)."""
    return f"{name}_{epochs}epochs"


def snapshot_path(run_folder: Path, epoch: int) -> Path:
    """The file that keeps a run's weights after `epoch`."""
    return Path(run_folder) / f"epoch_{epoch:03d}.pt"


def kept_epochs(run_folder: Path) -> list[int]:
    """The epochs whose snapshots (`snapshot_path`) a run folder holds, in order."""
    return sorted(int(p.stem.split("_")[1]) for p in Path(run_folder).glob("epoch_*.pt"))


def build(config: dict) -> torch.nn.Module:
    """A fresh network from a config dict such as ``{"name": "AttentionUNet", "hidden": 32, ...}``."""
    name = config.get("name")
    if name not in MODELS:
        raise ckpt.CheckpointError(f"unknown model {name!r} in checkpoint config; known: {', '.join(MODELS)}.")
    if name == "ConditionalCourseUNet" and not config.get("num_classes") and "time_modulation" not in config:
        raise ckpt.CheckpointError("this time-only UNet was saved before its config recorded the time modulation "
                                   "(it added t1 and t2, the default now multiplies): train it again.")
    return MODELS[name](**{k: v for k, v in config.items() if k != "name"})


def _device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} is not available on this machine (no CUDA GPU): use 'cpu', or "
                         "helpers.foundation.hardware.pick_device().")
    return device


def _file(path: Path, epoch: int | None) -> Path:
    """The checkpoint file that holds a run's last weights (epoch None) or its weights after `epoch`."""
    run_folder = path if path.is_dir() or path.suffix != ".pt" else path.parent  # folder names may hold dots
    made_by = MADE_BY.get(run_folder.name, "its training cell")
    trained = run_folder.is_dir() and ((run_folder / "last.pt").exists() or any(run_folder.glob("epoch_*.pt")))
    if not trained:   # no folder, or one a training that never finished an epoch left (its lock, say)
        raise ckpt.CheckpointError(f"no trained model at {run_folder}: run {made_by} first, in the same profile "
                                   "(WORKBOOK_PROFILE), to train it.")
    if epoch is None:
        return run_folder / "last.pt" if path == run_folder else path
    snapshot = snapshot_path(run_folder, epoch)
    if snapshot.exists():
        return snapshot
    last = run_folder / "last.pt"
    if last.exists() and ckpt.load(last)["epoch"] == epoch:
        return last
    kept = kept_epochs(run_folder)
    which = f"it kept those after epochs {kept}" if kept else "it kept no snapshots"
    raise ckpt.CheckpointError(f"{run_folder} kept no weights after epoch {epoch}: {which} (train(..., "
                               "keep_epochs=...) names the epochs to keep).")


def load(path, weights: str = "model", epoch: int | None = None, device="cpu") -> torch.nn.Module:
    """The network of a run (its folder, ``last.pt`` or an ``epoch_XXX.pt``), in eval mode, on `device`.

    `weights` is ``"model"`` (the optimizer's weights) or ``"ema"`` (their moving average, in ``last.pt`` only);
    `epoch` picks the snapshot kept after that epoch instead of the finished run's last weights.
    """
    if weights not in ("model", "ema"):
        raise ValueError(f"weights must be 'model' or 'ema', not {weights!r}.")
    device = _device(device)
    path = Path(path)
    if epoch is None and path.name.startswith("epoch_") and path.suffix == ".pt":
        epoch = int(path.stem.split("_")[1])  # a snapshot file named directly
    file = _file(path, epoch)
    made_by = MADE_BY.get(file.parent.name, "its training cell")
    if not file.exists():
        raise ckpt.CheckpointError(f"no trained model at {file}: run {made_by} first, in the same profile "
                                   "(WORKBOOK_PROFILE), to train it.")
    state = ckpt.load(file, device)
    if "config" not in state or "model" not in state:
        raise ckpt.CheckpointError(f"{file} is not a training checkpoint of this workbook (no config or weights).")
    if epoch is None and state["epoch"] < state["config"]["train"]["epochs"]:
        raise ckpt.CheckpointError(
            f"{file} is unfinished (epoch {state['epoch']} of {state['config']['train']['epochs']}): run "
            f"{made_by} again to finish it.")
    if weights not in state:
        raise ckpt.CheckpointError(f"{file} holds no {weights!r} weights (snapshots and runs older than weight "
                                   "averaging keep only 'model'): load weights='model', or retrain with "
                                   "WORKBOOK_RETRAIN=1.")
    model = build(state["config"]["model"]).to(device)
    ckpt.load_weights(model, state[weights], file)
    return model.eval()


def image_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of the images a network of this workbook takes, from its config."""
    return model.config["in_channels"], model.config["image_size"], model.config["image_size"]
