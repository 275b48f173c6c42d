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

from helpers import checkpoint, data, metrics, profile, runtime
from helpers.classifier import DigitClassifier, classification_loss, trained_classifier
from helpers.models import load_trained
from helpers.sample import generate
from helpers.training import TrainConfig, train


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    device = runtime.pick_device()
    cfg = profile.settings("classifier", args.profile)
    train_x, train_y = data.load_mnist("train")
    test_x, test_y = data.load_mnist("test")

    stronger = DigitClassifier(cfg.width)
    config = TrainConfig(epochs=args.epochs, batch_size=cfg.batch_size, lr=cfg.lr, lr_decay=0.1 ** (1 / args.epochs),
                         seed=0)
    train(stronger.to(device), classification_loss, (train_x, train_y), config,
          checkpoint.run_dir(f"classifier_{args.epochs}epochs", args.profile), device=device)

    samples = {name: generate(load_trained(checkpoint.run_dir(f"flow_time_{name}", args.profile), device,
                                           weights="ema"), args.samples, 50, 0)
               for name in ("course", "attention")}
    classifiers = {f"shipped ({cfg.epochs} epochs)": trained_classifier(device, profile=args.profile),
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
