"""Autoguidance of a time-only flow model by an early snapshot of its own training run.

    .venv/bin/python benchmarks/autoguidance.py [--profile cpu] [--run flow_time_course] [--guide-epoch 1]
                                                [--weights ema] [--guidance 1 2 3 4] [--samples 500]
                                                [--heun-steps 10]

Samples ``checkpoints/<profile>/<run>`` with ``v = v_guide + w (v - v_guide)``, the guide being the run's
weights after `--guide-epoch` (w = 1 is the model alone), and prints for each w, with 50 Euler steps (and
Heun at `--heun-steps`, if given), the fraction the project's classifier reads with confidence > 0.9 and the
Frechet distance of its features to the MNIST test set, beside the real-data floor at the same count.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import guidance, samplers
from helpers.foundation import data, hardware
from helpers.measure import metrics
from helpers.training import profile, runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=profile.PROFILES)
    parser.add_argument("--run", default="flow_time_course", help="a time-only run under checkpoints/<profile>/")
    parser.add_argument("--guide-epoch", type=int, default=1)
    parser.add_argument("--weights", choices=("model", "ema"), default="ema", help="the guided model's weights")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--heun-steps", type=int, default=0, help="also sample with Heun at this many steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = hardware.pick_device()
    run_dir = runs.folder(args.run, args.profile)
    model = runs.load(run_dir, args.weights, device=device)
    guide = runs.load(run_dir, epoch=args.guide_epoch, device=device)
    classifier = metrics.trained_classifier(device, profile=args.profile)
    test_x, _ = data.load_mnist("test")
    train_x, _ = data.load_mnist("train")
    test_features, _ = metrics.classify(classifier, test_x)
    floor = metrics.real_data_floor(classifier, train_x, test_features, args.samples, args.seed)
    print(f"[{args.profile}] {args.run} ({args.weights} weights) guided by its epoch-{args.guide_epoch} weights, "
          f"{args.samples} samples; floor: confident > 0.9 {floor['confident > 0.9']:.3f}, "
          f"Frechet distance {floor['Frechet distance']:.2f}")
    settings = [(50, "euler")] + ([(args.heun_steps, "heun")] if args.heun_steps else [])
    for w in args.guidance:
        for steps, method in settings:
            start = time.perf_counter()
            samples = samplers.generate(guidance.autoguided(model, guide, w), args.samples, runs.image_shape(model),
                                        steps, args.seed, method=method, device=device)
            q = metrics.sample_quality(classifier, samples, test_features)
            print(f"  w = {w:g}, {method} {steps:2d} steps ({samplers.evaluations(steps, method):2d} evaluations): "
                  f"confident > 0.9 {q['confident > 0.9']:.3f}, Frechet distance {q['Frechet distance']:.2f} "
                  f"[{time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
