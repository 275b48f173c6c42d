"""How closely each ideal machine (IS, LS, ELS, bbELS) matches the conv (course) UNet as the number of training
images N grows: median r and r^2 over the noises, as notebook 05 measures them.

    .venv/bin/python benchmarks/agreement_vs_n.py [--sizes 256 1000 2000 10000] [--noises 21] [--profile cpu]

Every N uses the same starting noises (the shipped data/x_1.pt, then noises seeded 0, as notebook 05), the same
20 Euler steps as the UNet, and the locality schedule P(t) calibrated in notebook 05
(checkpoints/<profile>/locality_flow_time_course/calibration.pt, made with that profile's N; it is reused for
every N). ELS and bbELS merge identical patches. Prints, per N, the seconds each machine took and the table.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import ideal, samplers
from helpers.foundation import data
from helpers.measure import locality, metrics
from helpers.training import profile, runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1000, 2000, 10000])
    parser.add_argument("--noises", type=int, default=21)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    profile.check_profile(args.profile)
    record = torch.load(runs.folder(runs.LOCALITY, args.profile) / "calibration.pt", weights_only=True)
    schedule = locality.LocalitySchedule(record["times"], record["sizes"])
    unet = runs.load(runs.folder(runs.FLOW_TIME_COURSE, args.profile))
    noises = torch.cat([data.starting_noise(),
                        torch.randn(args.noises - 1, 1, 32, 32, generator=torch.Generator().manual_seed(0))])
    reference = samplers.integrate(unet, noises, args.steps)
    train_x = data.load_mnist("train")[0]
    print(f"conv UNet {runs.FLOW_TIME_COURSE} ({args.profile}), {args.noises} noises, {args.steps} steps, P(t) = "
          f"{record['sizes']} (calibrated with N = {record['config']['train_images']})")
    rows = []
    for n in args.sizes:
        train = train_x[:n].contiguous()
        machines = {"IS": lambda x, t: ideal.ideal_denoiser(x, t, train),
                    "LS": lambda x, t: ideal.local_denoiser(x, t, train, schedule),
                    "ELS": lambda x, t: ideal.els_denoiser(x, t, train, schedule, deduplicate=True),
                    "bbELS": lambda x, t: ideal.bbels_denoiser(x, t, train, schedule, deduplicate=True)}
        row = [n]
        for name, machine in machines.items():
            start = time.perf_counter()
            scores = metrics.agreement(ideal.sample(machine, noises, args.steps), reference)
            print(f"N = {n:6d} {name:6s} {time.perf_counter() - start:8.1f} s", flush=True)
            row += [scores["r"].median().item(), scores["r^2"].median().item()]
        rows.append(row)
    print(f"\nmedian agreement with the conv UNet ({args.noises} noises)")
    print(f"{'N':>6s} " + " ".join(f"{m + ' r':>8s} {m + ' r^2':>9s}" for m in ("IS", "LS", "ELS", "bbELS")))
    for n, *values in rows:
        print(f"{n:6d} " + " ".join(f"{r:8.3f} {r2:9.3f}" for r, r2 in zip(values[::2], values[1::2])))


if __name__ == "__main__":
    main()
