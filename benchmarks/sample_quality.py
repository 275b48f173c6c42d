"""The sample-quality figures of the flow-matching checkpoints, measured with the project's classifier.

    .venv/bin/python benchmarks/sample_quality.py [--profile cpu] [--per-class 100] [--seed 0]
                                                  [--guidance 1 3 5 7] [--models class time]
                                                  [--weights model ema]

Prints, for 10 x per-class samples (and as many for the time-only models):
- the classifier's test accuracy, and the real-data floor of the Frechet distance (real training images
  against the test set, same count);
- the class-conditioned model: accuracy and Frechet distance for gamma in {1, 3, 5, 7} with 50 Euler steps,
  and Heun at 6 and 10 steps (11 and 19 model evaluations) at gamma = 5;
- each time-only model: fraction classified with confidence > 0.9 and Frechet distance, Euler 50 vs Heun;
each for the optimizer's last weights and for their exponential moving average (``--weights``).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import guidance, samplers
from helpers.foundation import data, hardware
from helpers.measure import metrics
from helpers.training import profile, runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=profile.PROFILES)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0, 7.0],
                        help="the gamma values of the Euler sweep")
    parser.add_argument("--models", nargs="+", choices=("class", "time"), default=["class", "time"],
                        help="class: the class-conditioned model; time: the two time-only models")
    parser.add_argument("--weights", nargs="+", choices=("model", "ema"), default=["model", "ema"],
                        help="the last weights, their moving average, or both")
    args = parser.parse_args()
    count = 10 * args.per_class

    device = hardware.pick_device()
    classifier = metrics.trained_classifier(device, profile=args.profile)
    test_x, test_y = data.load_mnist("test")
    train_x, _ = data.load_mnist("train")
    test_features, test_probabilities = metrics.classify(classifier, test_x)
    print(f"[{args.profile}] classifier test accuracy {metrics.accuracy(test_probabilities, test_y):.4f}")
    floor = metrics.real_data_floor(classifier, train_x, test_features, count, args.seed)
    print(f"floor: {count} real training images: Frechet distance {floor['Frechet distance']:.3f}, "
          f"confident > 0.9 {floor['confident > 0.9']:.3f}")

    labels = torch.arange(10).repeat_interleave(args.per_class)
    for weights in args.weights:
        if "class" in args.models:
            model = runs.load(runs.folder(runs.FLOW_CLASS_DECAY, args.profile), weights, device=device)
            print(f"class-conditioned course UNet ({weights} weights), {count} samples ({args.per_class} per digit):")
            settings = [(g, 50, "euler") for g in args.guidance] + [(5.0, 6, "heun"), (5.0, 10, "heun")]
            for gamma, steps, method in settings:
                start = time.perf_counter()
                samples = samplers.generate(guidance.classifier_free(model, gamma), count, runs.image_shape(model), steps,
                                           args.seed, labels, method, device=device)
                q = metrics.sample_quality(classifier, samples, test_features, labels)
                print(f"  gamma {gamma:g}, {method} {steps:2d} steps ({samplers.evaluations(steps, method):2d} "
                      f"evaluations): accuracy {q['accuracy']:.4f}, Frechet distance {q['Frechet distance']:.3f} "
                      f"({q['Frechet distance'] / floor['Frechet distance']:.2f} x floor) [{time.perf_counter() - start:.0f} s]")
        for name in (runs.FLOW_TIME_COURSE, runs.FLOW_TIME_ATTENTION) if "time" in args.models else ():
            model = runs.load(runs.folder(name, args.profile), weights, device=device)
            print(f"time-only {name} ({weights} weights), {count} samples:")
            for steps, method in ((50, "euler"), (6, "heun"), (10, "heun")):
                samples = samplers.generate(model, count, runs.image_shape(model), steps, args.seed, method=method,
                                            device=device)
                q = metrics.sample_quality(classifier, samples, test_features)
                print(f"  {method} {steps:2d} steps ({samplers.evaluations(steps, method):2d} evaluations): "
                      f"confident > 0.9 {q['confident > 0.9']:.4f}, Frechet distance {q['Frechet distance']:.3f} "
                      f"({q['Frechet distance'] / floor['Frechet distance']:.2f} x floor)")

if __name__ == "__main__":
    main()
