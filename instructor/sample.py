"""Sample a trained flow-matching run to a file, for graders and scripts.

    python -m instructor sample RUN --per-class N [--guidance G] --steps T --seed S --out FILE.pt   (class-conditioned)
    python -m instructor sample RUN --n N --steps T --seed S --out FILE.pt                          (time-only)
    python -m instructor sample RUN --n N --guide-epoch 1 --guidance W --out FILE.pt                (autoguided)

Writes ``{"images": float [10*N, 1, 32, 32] in [-1, 1], "labels": long [10*N]}`` (no labels for a
time-only model; labels are 0..9, N of each, in order). The starting noise comes from a generator seeded
with S, so the same seed on the same machine and thread count (OMP_NUM_THREADS) gives the same file. Without
``--guide-epoch``, ``--guidance`` is the classifier-free guidance scale gamma of a class-conditioned model
(default 5); with it, the run's own snapshot after epoch E is the weak guide of autoguidance and ``--guidance``
its weight w (`helpers.guidance`).
Every argument is checked, and ``--out`` is checked writable with room for the file, before sampling starts;
the images are checked finite before they are written. The file is written atomically (a temporary beside it,
then one rename, with the user's normal file mode), so a full disk or an interruption leaves the previous file
whole, and any failure to write is one sentence.
"""
import argparse
import os
from pathlib import Path

import torch

from helpers import guidance, samplers
from helpers.foundation import atomic, validate
from helpers.foundation import checkpoint_files as ckpt
from helpers.training import runs


def check_output(path: Path, size: int = 0) -> None:
    """Fail now, not after sampling, when `path` cannot be written: a folder, a parent that is a file, a read-only
    file system, no rights, or less free space than the file's `size` in bytes."""
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder: give a file name such as {path / 'samples.pt'}.")
    parent = path.parent
    for folder in [parent, *parent.parents]:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {path}: {folder} is a file, not a folder.")
        if folder.exists():
            break
    try:
        atomic.check_folder(parent, need_bytes=size)
    except atomic.WriteError as error:
        raise ValueError(f"--out {path}: {error}") from None


def memory_needed(count: int, config: dict) -> int:
    """Bytes of the float32 images that `count` samples of this model make."""
    return count * config["in_channels"] * config["image_size"] ** 2 * 4


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a run folder or its last.pt")
    parser.add_argument("--per-class", type=int, help="samples per digit (class-conditioned models)")
    parser.add_argument("--n", type=int, help="number of samples (time-only models)")
    parser.add_argument("--guidance", type=float, help=f"classifier-free guidance scale gamma (default "
                        f"{guidance.CFG_SCALE:g}), or with --guide-epoch the autoguidance weight w (required then)")
    parser.add_argument("--guide-epoch", type=int, help="autoguide with this run's snapshot after that epoch")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--method", choices=samplers.METHODS, default="euler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        check_output(args.out)
        validate.count(args.steps, "--steps")
        if args.guidance is not None:
            validate.finite_number(args.guidance, "--guidance")
        if args.guide_epoch is not None and args.guidance is None:
            raise ValueError("--guide-epoch needs --guidance W, the autoguidance weight (1 = no guidance; 2 to 3 "
                             "is typical)")
        model = runs.load(args.checkpoint)
        config = model.config
        if config["name"] not in runs.VELOCITY_MODELS:
            raise ValueError(f"{args.checkpoint} holds a {config['name']}, not a flow-matching model: sample a run "
                             f"of notebook 02 or 03 ({', '.join(runs.VELOCITY_MODELS)}).")
        num_classes = config["num_classes"]
        if num_classes:
            if args.n is not None or args.per_class is None:
                raise ValueError(f"{args.checkpoint} is class-conditioned: give --per-class N (not --n)")
            labels = torch.arange(num_classes).repeat_interleave(validate.count(args.per_class, "--per-class"))
            count = len(labels)
        else:
            if args.per_class is not None or args.n is None:
                raise ValueError(f"{args.checkpoint} is time-only: give --n N (it has no classes, so no --per-class)")
            if args.guidance is not None and args.guide_epoch is None:
                raise ValueError(f"{args.checkpoint} is time-only, so it has no classifier-free guidance: autoguide "
                                 "it with --guide-epoch E --guidance W, or drop --guidance")
            labels, count = None, validate.count(args.n, "--n")
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if memory_needed(count, config) > available // 2:
            raise ValueError(f"{count:,} samples would need {memory_needed(count, config) / 2**30:,.1f} GiB for the "
                             f"images, over half of this machine's {available / 2**30:.0f} GiB: sample fewer, into "
                             "several files with different --seed")
        check_output(args.out, memory_needed(count, config) + 8 * count + 2**16)   # images, labels, the archive
        if args.guide_epoch is not None:
            velocity = guidance.autoguided(model, runs.load(args.checkpoint, epoch=args.guide_epoch), args.guidance)
        elif num_classes:
            velocity = guidance.classifier_free(model, guidance.CFG_SCALE if args.guidance is None else args.guidance)
        else:
            velocity = model
    except (ckpt.CheckpointError, ValueError, TypeError) as error:
        parser.error(str(error))

    shape = runs.image_shape(model)
    try:
        images = validate.all_finite(samplers.generate(velocity, count, shape, args.steps, args.seed, labels,
                                                       args.method), "the samples")
    except FloatingPointError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    result = {"images": images}
    if labels is not None:
        result["labels"] = labels
    try:
        ckpt.save_atomic(result, args.out)
    except atomic.WriteError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"wrote {len(images)} samples to {args.out}")

