"""ELS and bbELS along notebook 05's calibrated schedule: seconds per step, and how much an exact pruning could skip.

    .venv/bin/python benchmarks/machine_steps.py [--n 2000] [--batch 11] [--profile cpu] [--prunable] [--at 0.95 0.6]

For each step of the calibrated schedule P(t) (checkpoints/<profile>/locality_flow_time_course/calibration.pt),
on test digits noised to x_t = (1 - t) x0 + t eps, prints the seconds of one `els_denoiser` and one
`bbels_denoiser` call (with deduplication, as notebook 05 runs them) and the totals over the trajectory.

With --prunable, also the fraction of ELS's (query, training patch) pairs whose logit lies within 80 of the
query's maximum. A pair further below weighs less than exp(-80) ~ 1e-35 and could be skipped exactly (the
streamed softmax, `helpers.foundation.patch_attention`, already floors such weights), but any exact pruning (patch-norm
bounds, clustering) still has to compute every pair within 80: the sum over steps of seconds x (1 - fraction)
is the most it could save.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import ideal
from helpers.foundation import data
from helpers.foundation.patch_attention import LOGITS_PER_CHUNK, patch_logits, unique_patches
from helpers.training import profile, runs


def within_80(queries: torch.Tensor, keys: torch.Tensor, log_counts: torch.Tensor, t: float) -> float:
    """Fraction of (query, key) pairs, keys weighted by their counts, whose logit is within 80 of the query's
    maximum: two passes over the keys in chunks (the maxima, then the counts)."""
    chunk = max(16, LOGITS_PER_CHUNK // queries.shape[0])
    best = torch.full((queries.shape[0], 1), float("-inf"))
    for start in range(0, keys.shape[0], chunk):
        logits = patch_logits(queries, keys[start:start + chunk], t, log_counts[start:start + chunk])
        best = torch.maximum(best, logits.amax(1, keepdim=True))
    kept = 0.0
    for start in range(0, keys.shape[0], chunk):
        counts = log_counts[start:start + chunk]
        logits = patch_logits(queries, keys[start:start + chunk], t, counts)
        kept += float(((logits >= best - 80) * counts.exp()).sum())
    return kept / (queries.shape[0] * float(log_counts.exp().sum()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="training images the machines read")
    parser.add_argument("--batch", type=int, default=11, help="noisy test digits per step (notebook 05: 11)")
    parser.add_argument("--profile", default="cpu", choices=profile.PROFILES)
    parser.add_argument("--prunable", action="store_true", help="also the fraction of ELS's pairs within 80")
    parser.add_argument("--at", type=float, nargs="+", help="only the steps at these t (default: every step)")
    args = parser.parse_args()
    record = torch.load(runs.folder(runs.LOCALITY, args.profile) / "calibration.pt", weights_only=True)
    train = data.load_mnist("train")[0][:args.n].contiguous()
    clean = data.load_mnist("test")[0][:args.batch]
    torch.manual_seed(0)
    print(f"N = {args.n:,}, batch {args.batch}, schedule of {args.profile} (calibrated with N = "
          f"{record['config']['train_images']:,}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'t':>5} {'P':>3} {'ELS s':>8} {'bbELS s':>8}" + (f" {'ELS pairs within 80':>20}" if args.prunable else ""))
    totals, skippable = {"ELS": 0.0, "bbELS": 0.0}, 0.0
    for t, p in zip(record["times"], record["sizes"]):
        if args.at and not any(abs(t - wanted) < 1e-6 for wanted in args.at):
            continue
        x_t = (1 - t) * clean + t * torch.randn_like(clean)
        seconds = {}
        for name, machine in (("ELS", ideal.els_denoiser), ("bbELS", ideal.bbels_denoiser)):
            start = time.perf_counter()
            machine(x_t, t, train, p, deduplicate=True)
            seconds[name] = time.perf_counter() - start
            totals[name] += seconds[name]
        line = f"{t:5.2f} {p:3d} {seconds['ELS']:8.2f} {seconds['bbELS']:8.2f}"
        if args.prunable:
            keys, log_counts = unique_patches(ideal._patches(train, p))
            queries = F.unfold(F.pad(x_t, [p // 2] * 4, mode="circular"), p).transpose(1, 2).reshape(-1, p * p)
            fraction = within_80(queries, keys, log_counts, t)
            skippable += seconds["ELS"] * (1 - fraction)
            line += f" {fraction:20.3f}"
        print(line, flush=True)
    print(f"{'these steps' if args.at else 'one trajectory'}: ELS {totals['ELS']:.1f} s, bbELS {totals['bbELS']:.1f} s")
    if args.prunable:
        print(f"an exact pruning could skip at most {skippable:.1f} s of ELS's {totals['ELS']:.1f} s "
              f"({skippable / totals['ELS']:.0%}), a speed-up of at most {totals['ELS'] / (totals['ELS'] - skippable):.2f}x")


if __name__ == "__main__":
    main()
