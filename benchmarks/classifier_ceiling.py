"""Is the measuring classifier what holds the time-only "confident > 0.9" figure down?

    .venv/bin/python benchmarks/classifier_ceiling.py [--profile cpu] [--epochs 6] [--samples 500]

Trains a stronger copy of the project's classifier (same architecture, `--epochs` epochs over all 60,000
training digits, the learning rate decayed ten-fold over the run) into
``checkpoints/<profile>/classifier_<epochs>epochs``, then prints, for it and for the shipped classifier:
test accuracy, the fraction of real test digits read with confidence > 0.9 (the ceiling a generator can
reach), and that fraction for the same `--samples` samples (50 Euler steps, moving-average weights) of
each of notebook 02's time-only UNets. If the samples' figure barely moves while the real digits' rises,
the gap is in the generator, not in the measure.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import samplers
from helpers.foundation import data, hardware
from helpers.foundation.classifier import DigitClassifier
from helpers.measure import metrics
from helpers.training import profile, runs
from helpers.training.loop import TrainConfig, train


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=profile.PROFILES)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    device = hardware.pick_device()
    cfg = profile.settings("classifier", args.profile)
    train_x, train_y = data.load_mnist("train")
    test_x, test_y = data.load_mnist("test")

    stronger = DigitClassifier(cfg.width)
    config = TrainConfig(epochs=args.epochs, batch_size=cfg.batch_size, lr=cfg.lr, lr_decay_over_run=0.1, seed=0)
    train(stronger.to(device), metrics.classification_loss, (train_x, train_y), config,
          runs.folder(f"{runs.CLASSIFIER}_{args.epochs}epochs", args.profile), device=device)

    unets = {"course": runs.FLOW_TIME_COURSE, "attention": runs.FLOW_TIME_ATTENTION}
    samples = {}
    for label, name in unets.items():
        model = runs.load(runs.folder(name, args.profile), "ema", device=device)
        samples[label] = samplers.generate(model, args.samples, runs.image_shape(model), 50, 0, device=device)
    classifiers = {f"shipped ({cfg.epochs} epochs)": metrics.trained_classifier(device, profile=args.profile),
                   f"stronger ({args.epochs} epochs)": stronger.eval()}
    for label, classifier in classifiers.items():
        _, test_p = metrics.classify(classifier, test_x)
        line = (f"[{args.profile}] {label}: test accuracy {metrics.accuracy(test_p, test_y):.4f}, "
                f"real test digits confident > 0.9 {metrics.confident_fraction(test_p):.3f}")
        for name, images in samples.items():
            _, p = metrics.classify(classifier, images)
            line += f"; {name} UNet samples {metrics.confident_fraction(p):.3f}"
        print(line)


if __name__ == "__main__":
    main()
