"""Sample a trained flow-matching checkpoint to a file, for graders and scripts.

    python -m helpers.sample CHECKPOINT --per-class N --guidance G --steps T --seed S --out FILE.pt
    python -m helpers.sample CHECKPOINT --n N --steps T --seed S --out FILE.pt        (time-only model)
    python -m helpers.sample CHECKPOINT --n N --guide-epoch 1 --guidance W --out FILE.pt (autoguided)

Writes ``{"images": float [10*N, 1, 32, 32] in [-1, 1], "labels": long [10*N]}`` (no labels for a
time-only model; labels are 0..9, N of each, in order). The starting noise comes from a generator seeded
with S, so the same seed on the same machine gives the same file. With ``--guide-epoch E`` the run's own
snapshot after epoch E is the weak guide of autoguidance and ``--guidance`` its weight w (see
`helpers.flow_matching`); without it, ``--guidance`` is the classifier-free guidance scale.
"""
import argparse
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .flow_matching import FlowMatching
from .models import build, load_trained, run_folder
from .training import load_snapshot


@torch.no_grad()
def generate(model, count: int, steps: int, seed: int, labels=None, guidance: float = 1.0,
             method: str = "euler", batch_size: int = 250, guide=None) -> torch.Tensor:
    """`count` samples from noise drawn with `seed`, in batches (results do not depend on batch size),
    autoguided by the weaker model `guide` when one is given."""
    device = next(model.parameters()).device
    size = model.config["image_size"]
    noise = torch.randn(count, model.config["in_channels"], size, size, generator=torch.Generator().manual_seed(seed))
    fm = FlowMatching(model, num_classes=model.config.get("num_classes", 0))
    out = []
    for start in range(0, count, batch_size):
        batch_labels = None if labels is None else labels[start:start + batch_size].to(device)
        out.append(fm.sample(noise[start:start + batch_size].to(device), steps, batch_labels, guidance, method,
                             guide=guide).cpu())
    return torch.cat(out).clamp(-1, 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a run folder or its last.pt")
    parser.add_argument("--per-class", type=int, help="samples per digit (class-conditioned models)")
    parser.add_argument("--n", type=int, help="number of samples (time-only models)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale gamma (default 5), or with "
                        "--guide-epoch the autoguidance weight w (required then)")
    parser.add_argument("--guide-epoch", type=int, help="autoguide with this run's snapshot after that epoch")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--method", choices=("euler", "heun"), default="euler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.guide_epoch is not None and args.guidance is None:
        parser.error("--guide-epoch needs --guidance W, the autoguidance weight (1 = no guidance; 2 to 3 is typical)")
    try:
        model = load_trained(args.checkpoint)
        guide = None if args.guide_epoch is None else load_snapshot(
            build(model.config), run_folder(args.checkpoint), args.guide_epoch)
    except ckpt.CheckpointError as error:
        parser.error(str(error))
    num_classes = model.config.get("num_classes", 0)
    if num_classes and not args.per_class:
        parser.error(f"{args.checkpoint} is class-conditioned: give --per-class N")
    if not num_classes and not args.n:
        parser.error(f"{args.checkpoint} is time-only: give --n N (it has no classes)")
    guidance = args.guidance if args.guidance is not None else 5.0 if num_classes else 1.0
    if num_classes:
        labels = torch.arange(num_classes).repeat_interleave(args.per_class)
        images = generate(model, len(labels), args.steps, args.seed, labels, guidance, args.method, guide=guide)
        result = {"images": images, "labels": labels}
    else:
        result = {"images": generate(model, args.n, args.steps, args.seed, guidance=guidance, method=args.method,
                                     guide=guide)}
    ckpt.save_atomic(result, args.out)
    print(f"wrote {len(result['images'])} samples to {args.out}")


if __name__ == "__main__":
    main()
