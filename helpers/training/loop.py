"""The training loop every notebook shares: progress bar, loss history, atomic checkpoints, resume.

``train`` runs ``loss_fn(model, batch)`` with Adam over shuffled minibatches of in-memory tensors.
After every epoch it writes ``last.pt`` (model, optimizer, scheduler, loss history, epoch) atomically;
run the same cell again after an interruption (a Colab disconnect, a KeyboardInterrupt) and it resumes
from that checkpoint. Shuffling and the loss's random draws are seeded per epoch from (seed, epoch),
so an interrupted-and-resumed run ends with the same weights as an uninterrupted one (on the CPU).
A finished checkpoint with the same config is loaded instead of retraining; it keeps the weights and
the loss history but drops the optimizer state, which only a resume needs, and stores the weights in
fp16 (the trained model is left holding those same rounded weights, so a fresh run and a later load
sample identically). The snapshots kept for figures (``epoch_XXX.pt``) are fp16 too; the last epoch's
weights are ``last.pt`` itself.

Every run also keeps an exponential moving average of the weights, stored as ``ema`` beside ``model``:

    ema <- d ema + (1 - d) theta   after each optimizer step,   d = min(EMA_DECAY, (1 + n) / (10 + n))

(n = optimizer steps so far; the warm-up keeps early steps from being dominated by the random initial
weights). `helpers.training.runs.load(..., weights="ema")` samples with it.

One writer per run: while `train` runs, it holds the run folder's lock (``.training.lock``, `filelock`, which
the kernel releases when the process ends, even by a kill; the file is removed when training ends, and left only
by a kill). A second process (or thread) that would train the same folder meanwhile is refused with `RunBusy`,
one sentence naming the holder's pid, host and command, unless it passes ``wait=True``: then it says whom it
waits for and waits, and afterwards loads (or resumes) what the first one saved. One that finds a finished
checkpoint of its config loads it without waiting (two notebooks that load one classifier run side by side). Under the lock, temporaries of this run's checkpoints that a killed process left behind are removed.
A run folder that cannot be written (a read-only copy of a finished run) is still loaded, without the lock; it
cannot be trained, and says so before any training starts.

Speed: the loss is read back to the host only every 10 steps (for the progress bar) and once per epoch,
so the GPU is never stalled waiting for Python; Adam is fused on CUDA.
"""
import contextlib
import errno
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import filelock
import torch

from helpers.foundation import atomic, validate
from helpers.foundation import checkpoint_files as ckpt
from helpers.foundation.lock_holder import holder, record_holder
from helpers.foundation.progress import progress_bar
from helpers.training import runs
from helpers.training.profile import retrain_requested


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run; a checkpoint made with other values is refused."""
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    lr_decay_over_run: float | None = None  # the rate falls by this factor over the run (0.1: ten-fold), as an
    #                                         exponential decay of lr_decay_over_run ** (1 / epochs) per epoch
    grad_clip: float | None = None  # max global gradient norm; None = no clipping

    def __post_init__(self):
        validate.count(self.epochs, "epochs")
        validate.count(self.batch_size, "batch_size")
        validate.finite_number(self.lr, "the learning rate lr", minimum=0.0)
        if self.lr_decay_over_run is not None:
            validate.finite_number(self.lr_decay_over_run, "lr_decay_over_run", minimum=0.0, maximum=1.0)
        if self.grad_clip is not None:
            validate.finite_number(self.grad_clip, "grad_clip", minimum=0.0)


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # loss of every iteration, in order
    epochs_done: int = 0
    resumed_from: int = 0  # epoch the run resumed from (0 = fresh start)
    run_dir: Path | None = None
    loaded: bool = False   # True when the run was finished already and this call only loaded it

    def describe(self) -> str:
        """'5 epochs, 235 iterations' and how they came about: trained now, resumed, or a finished run loaded."""
        how = ("loaded, the run was finished" if self.loaded else
               f"resumed from epoch {self.resumed_from}" if self.resumed_from else "trained now")
        return f"{self.epochs_done} epochs, {len(self.history)} iterations ({how})"


LOCK_NAME = ".training.lock"
CHECKPOINT = re.compile(r"last\.pt|epoch_\d{3}\.pt")


class RunBusy(RuntimeError):
    """Another process (or thread) is training the same run folder."""


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = False):
    """Hold `run_dir`'s training lock for the block, which gets None; or, without the lock, the error to raise if
    the run must be written (a finished run is still loaded without it):

    - another process holds it: `RunBusy` naming the holder; with `wait`, a line on stderr saying whom it waits
      for, then the wait, and the lock;
    - the folder cannot be written (read-only, not the user's) but holds a checkpoint: a `WriteError`.
    """
    run_dir = Path(run_dir)
    lock = filelock.FileLock(run_dir / LOCK_NAME, on_acquired=record_holder)
    refusal, held = None, False
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
        held = True
    except filelock.Timeout:
        who = holder(run_dir / LOCK_NAME)
        if wait:
            print(f"waiting for {who}, which is training {run_dir} ...", file=sys.stderr, flush=True)
            lock.acquire()
            held = True
        else:
            refusal = RunBusy(f"{run_dir} is being trained by {who}: let it finish (or stop it), pass train(..., "
                              "wait=True) to wait for it here, or train into another run folder.")
    except OSError as error:
        if error.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK) and run_dir.is_dir():
            # a file system without locks (some network and FUSE mounts): train, and say what is not guarded
            print(f"warning: {run_dir} cannot be locked on its file system ({atomic.reason(error)}): nothing stops "
                  "a second process from training it at the same time.", file=sys.stderr, flush=True)
            held = None   # no lock to release; the file filelock opened for it means nothing here, and goes
        elif run_dir.exists() and not run_dir.is_dir():
            raise atomic.WriteError(error.errno, f"{run_dir} is a file, not a run folder: give a folder (a new "
                                                 "one, or one that holds last.pt).") from None
        elif error.errno == errno.ENOTDIR:
            raise atomic.WriteError(error.errno, atomic.describe(error, run_dir / "last.pt")) from None
        elif error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not (run_dir / "last.pt").is_file():
            raise atomic.WriteError(error.errno, f"cannot train into {run_dir}: {atomic.reason(error)}.") from None
        else:
            refusal = atomic.WriteError(errno.EROFS, f"{run_dir} cannot be written (read-only, or not yours), so this "
                                                     "run cannot be trained there: train into a writable folder "
                                                     "(copy the run there to resume it).")
    try:
        yield refusal
    finally:
        if held is None:
            with contextlib.suppress(OSError):
                (run_dir / LOCK_NAME).unlink()
        if held:
            # unlinked while still held, so no file is left in the run folder; filelock's acquire checks that the
            # file it locked still has a name, so a waiter that opened this one opens the path again
            with contextlib.suppress(OSError):
                (run_dir / LOCK_NAME).unlink()
            lock.release()


def _remove_leftovers(run_dir: Path) -> None:
    """Temporaries of this run's checkpoints that a kill left (write_atomic's, and the fixed .last.pt.tmp of
    earlier versions); called under the run's lock, where no other process can be writing them."""
    names = {match["name"] for path in run_dir.iterdir() if (match := atomic.LEFTOVER.fullmatch(path.name))
             and CHECKPOINT.fullmatch(match["name"])}
    atomic.remove_leftovers(run_dir, names)
    with contextlib.suppress(OSError):
        (run_dir / ".last.pt.tmp").unlink()


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


EMA_DECAY = 0.999


def _ema_decay(step: int) -> float:
    return min(EMA_DECAY, (1 + step) / (10 + step))


def _half(state_dict: dict) -> dict:
    """Floating-point tensors in fp16: sampling does not need full precision, and shipped checkpoints stay small."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def train(model: torch.nn.Module, loss_fn: Callable, data: tuple, config: TrainConfig, run_dir,
          device=None, retrain: bool | None = None, progress: bool = True, keep_epochs=(),
          wait: bool = False) -> TrainResult:
    """Train `model` on the tensors in `data` (split into minibatches along dim 0) and checkpoint each epoch.

    `loss_fn(model, batch)` returns a scalar loss, where `batch` is the tuple of minibatch tensors.
    `run_dir` holds ``last.pt`` and the ``epoch_XXX.pt`` snapshots of the epochs in `keep_epochs` (which epochs
    a figure needs is not part of the run's config: keeping others never invalidates a finished run, but one
    that went past an epoch of `keep_epochs` without keeping it is refused with the way to retrain it). With
    ``retrain=True`` (default: the `WORKBOOK_RETRAIN` switch) an existing checkpoint is ignored and overwritten
    as training proceeds. A non-finite loss stops training with an error before anything is saved, so
    ``last.pt`` keeps the last good epoch. The run folder is locked meanwhile: another trainer of it makes this
    one raise `RunBusy`, or wait with ``wait=True``.
    """
    run_dir = Path(run_dir)
    if not data or len(data[0]) == 0:
        raise ValueError("train() got no training examples: pass a tuple of tensors with at least one row.")
    if any(len(t) != len(data[0]) for t in data):
        raise ValueError(f"the tensors in data have different lengths {[len(t) for t in data]}: one row per example.")
    for t in data:
        validate.all_finite(t, "the training data")
    with run_lock(run_dir, wait) as refusal:
        return _train(model, loss_fn, data, config, run_dir, device, retrain, progress, keep_epochs, refusal)


def _train(model, loss_fn, data, config, run_dir, device, retrain, progress, keep_epochs, refusal) -> TrainResult:
    """`train`'s work, under the run's lock; or without it (`refusal`, raised if the run must be written): a
    finished run is loaded while another process holds the lock or the folder cannot be written."""
    if refusal is None:
        _remove_leftovers(run_dir)
    device = torch.device(device or next(model.parameters()).device)
    model.to(device, memory_format=torch.channels_last)  # faster convolutions (benchmarks/train_throughput.py)
    # the number of training examples is part of the config: a profile that changes it must not reuse a run
    full_config = ckpt.normalise({"model": model.config, "train": asdict(config), "data": {"examples": len(data[0])}})
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type == "cuda")
    scheduler = (torch.optim.lr_scheduler.ExponentialLR(optimizer, config.lr_decay_over_run ** (1 / config.epochs))
                 if config.lr_decay_over_run else None)
    result = TrainResult(run_dir=run_dir)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    last = run_dir / "last.pt"
    if retrain is None:
        retrain = retrain_requested()
    if last.exists() and not retrain:
        state = ckpt.load(last, device)
        ckpt.check_config(state, full_config, last)
        ckpt.load_weights(model, state["model"], last)
        if state["epoch"] < config.epochs:  # unfinished: the optimizer state is needed to resume
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
        result.history = list(state["history"])
        ema = {k: v.clone() for k, v in state.get("ema", state["model"]).items()}
        result.epochs_done = result.resumed_from = state["epoch"]
        result.loaded = state["epoch"] >= config.epochs
        kept = runs.kept_epochs(run_dir)
        missing = [e for e in sorted(set(keep_epochs)) if e <= state["epoch"] and e < config.epochs and e not in kept]
        if missing:
            raise ckpt.CheckpointError(
                f"{run_dir} went past epochs {missing} without keeping their weights, which keep_epochs asks for "
                f"(whoever trained it asked for other snapshots; it kept {kept or 'none'}): train it again with "
                "WORKBOOK_RETRAIN=1 (or train(..., retrain=True)), or ask only for the snapshots it kept.")
    if refusal is not None and (retrain or result.epochs_done < config.epochs):
        raise refusal

    n = data[0].shape[0]
    data = tuple(t.to(device) for t in data)
    steps = (n + config.batch_size - 1) // config.batch_size
    for epoch in range(result.epochs_done + 1, config.epochs + 1):
        model.train()
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        order = torch.randperm(n).to(device)
        bar = progress_bar(range(steps), desc=f"epoch {epoch}/{config.epochs}", disable=not progress)
        losses = []
        for step in bar:
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            loss = loss_fn(model, tuple(t[index] for t in data))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            _update_ema(ema, model, _ema_decay(len(result.history) + len(losses)))
            losses.append(loss.detach())
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1].item():.4f}")
        epoch_losses = torch.stack(losses)
        if not bool(torch.isfinite(epoch_losses).all()):
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (the loss became NaN or infinite); nothing of that epoch was "
                f"saved{f', {last} keeps epoch {result.epochs_done}' if result.epochs_done else ''}. Lower the learning rate, or clip gradients.")
        result.history += epoch_losses.tolist()
        if scheduler is not None:
            scheduler.step()
        result.epochs_done = epoch
        finished = epoch == config.epochs
        if epoch in keep_epochs and not finished:
            ckpt.save_atomic({"config": full_config, "epoch": epoch, "model": _half(model.state_dict())},
                             runs.snapshot_path(run_dir, epoch))
        state = {"config": full_config, "epoch": epoch, "model": model.state_dict(), "ema": ema,
                 "history": result.history}
        if finished:  # weights only, in fp16; the model keeps exactly the weights a later load gives
            state["model"], state["ema"] = _half(state["model"]), _half(ema)
            model.load_state_dict(state["model"])
        else:
            state["optimizer"] = optimizer.state_dict()
            state["scheduler"] = scheduler.state_dict() if scheduler is not None else None
        ckpt.save_atomic(state, last)
    model.eval()
    return result


@torch.no_grad()
def _update_ema(ema: dict, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) theta for floating-point entries; others (counters) are copied."""
    averaged, current = [], []
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            averaged.append(ema[k])
            current.append(v)
        else:
            ema[k].copy_(v)
    torch._foreach_lerp_(averaged, current, 1.0 - decay)
