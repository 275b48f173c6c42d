"""Longer training of a time-only flow model: does it close the gap to real digits?

    .venv/bin/python benchmarks/longer_training.py [--profile full] [--model attention] [--epochs 20]
                                                   [--hidden D] [--time-sampling logit_normal]
                                                   [--time-modulation add] [--coupling minibatch_ot]

Trains notebook 02's model (`course` or `attention`) with its profile's settings but `--epochs` epochs
(the learning-rate decay stretched to keep its ten-fold drop over the run) into
``checkpoints/<profile>/flow_time_<model>_<epochs>epochs[_<time sampling>][_D<hidden>][_add][_ot]`` (the course
UNet at the profile's own epochs and settings is notebook 02's run, loaded from its folder), then prints,
for 1,000 samples with 50 Euler steps from the last and the moving-average weights, the fraction the
project's classifier reads with confidence > 0.9 and the Frechet distance, beside the real-data floor.
The weights after epoch 1 are kept, as the guide of `benchmarks/autoguidance.py --run <that folder's name>`
(except in notebook 02's comparison run, the course UNet at the profile's `compare_epochs`, which keeps none).
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import flow_matching, samplers
from helpers.attention_unet import AttentionUNet
from helpers.course_unet import TIME_MODULATIONS, ConditionalCourseUNet
from helpers.foundation import data, hardware
from helpers.measure import metrics
from helpers.training import profile, runs
from helpers.training.loop import TrainConfig, train


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", choices=profile.PROFILES)
    parser.add_argument("--model", choices=("course", "attention"), default="attention")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--time-sampling", choices=flow_matching.TIME_SAMPLINGS, default="uniform",
                        help="how training draws t (logit-normal weights the middle of the path)")
    parser.add_argument("--hidden", type=int, help="the model's width D (default: the profile's)")
    parser.add_argument("--time-modulation", choices=TIME_MODULATIONS, default="multiply",
                        help="the course UNet's time modulation: the course's unflatten * t1, or unflatten + t1")
    parser.add_argument("--coupling", choices=flow_matching.COUPLINGS, default="independent",
                        help="how each batch pairs noises with images: independently, or by minibatch optimal transport")
    args = parser.parse_args()
    if args.model == "attention" and args.time_modulation != "multiply":
        parser.error("--time-modulation applies to the course UNet (--model course); the attention UNet adds its "
                     "time embedding inside every block.")
    cfg = profile.settings("flow_time", args.profile)
    device = hardware.pick_device()
    if args.model == "course":
        model = ConditionalCourseUNet(hidden=args.hidden or cfg.hidden, image_size=32,
                                      time_modulation=args.time_modulation)
        lr, images = cfg.lr, cfg.train_images
    else:
        model = AttentionUNet(hidden=args.hidden or cfg.attention_hidden, image_size=32)
        lr, images = cfg.attention_lr, cfg.attention_train_images
    train_x, _ = data.load_mnist("train")
    config = TrainConfig(epochs=args.epochs, batch_size=cfg.batch_size, lr=lr,
                         lr_decay_over_run=cfg.lr_decay_over_run,
                         seed=0)
    suffix = ("" if args.time_sampling == "uniform" else f"_{args.time_sampling}") + (
        f"_D{args.hidden}" if args.hidden else "") + ("_add" if args.time_modulation == "add" else "") + (
        "_ot" if args.coupling == "minibatch_ot" else "")
    base = runs.FLOW_TIME_COURSE if args.model == "course" else runs.FLOW_TIME_ATTENTION
    name = runs.of_length(base, args.epochs) + suffix
    keep_epochs = (1,)
    if args.model == "course" and not suffix and args.epochs == cfg.epochs:
        name, keep_epochs = base, cfg.snapshot_epochs  # notebook 02's run: same model, data, recipe and snapshots
    elif args.model == "course" and not suffix and args.epochs == cfg.compare_epochs:
        keep_epochs = ()  # notebook 02's longer-training comparison run, which keeps no snapshot
    run_dir = runs.folder(name, args.profile)
    start = time.perf_counter()
    loss_fn = flow_matching.training_loss(time_sampling=args.time_sampling, coupling=args.coupling)
    train(model.to(device), loss_fn, (train_x[:images],), config, run_dir, device=device, keep_epochs=keep_epochs)
    print(f"[{args.profile}] {args.model} UNet, D = {model.config['hidden']}, {args.epochs} epochs of {images:,} "
          f"images, batch {cfg.batch_size}, {args.time_sampling} t, {args.coupling} coupling: {time.perf_counter() - start:.0f} s on {device}")

    classifier = metrics.trained_classifier(device, profile=args.profile)
    test_x, _ = data.load_mnist("test")
    test_features, _ = metrics.classify(classifier, test_x)
    floor = metrics.real_data_floor(classifier, train_x, test_features, args.samples)
    print(f"floor: {args.samples} real digits, confident > 0.9 {floor['confident > 0.9']:.3f}, "
          f"Frechet distance {floor['Frechet distance']:.2f}")
    for weights in ("model", "ema"):
        trained = runs.load(run_dir, weights, device=device)
        samples = samplers.generate(trained, args.samples, runs.image_shape(trained), 50, 0, device=device)
        q = metrics.sample_quality(classifier, samples, test_features)
        print(f"{weights:5s} weights, {args.samples} samples, 50 Euler steps: confident > 0.9 "
              f"{q['confident > 0.9']:.3f}, Frechet distance {q['Frechet distance']:.2f}")


if __name__ == "__main__":
    main()
