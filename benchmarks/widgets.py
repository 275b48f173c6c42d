"""How fast each notebook's explorer (`helpers.display.explore`) answers a slider move.

    .venv/bin/python benchmarks/widgets.py [--profile cpu] [--threads 2]

Builds the five explorers as the notebooks do, from the profile's trained checkpoints (notebooks 01 to 03
must have run in that profile; the `cpu` ones are committed), and times `explorer.show(value)`, what a
slider move runs (the view and its PNG), for `--values` slider values spread over its range (both ends
included): first the build (which shows the initial value), then the first visit of each value (computed
unless it is the initial one), then a second visit of each (from the cache).
Prints, per explorer, the build time, the slowest first visit and the slowest later visit; then the slowest
slider move over all explorers (a first visit: the slowest callback a student can meet) and the slowest recall.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds

import torch

from helpers import diffusion
from helpers.backends import flow_backend
from helpers.display import explore
from helpers.foundation import data
from helpers.training import profile, runs


def explorers(name: str):
    """The five explorers as the notebooks build them: (label, function returning the explorer)."""
    flow, ideal_cfg = profile.settings("flow_time", name), profile.settings("ideal", name)
    tricks = profile.settings("tricks", name)
    test28 = data.load_mnist("test", image_size=28, value_range=(0.0, 1.0))[0][:1]
    test32 = data.load_mnist("test")[0]
    noise = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(1))  # one per digit in 03
    course = runs.load(runs.folder(runs.FLOW_TIME_COURSE, name))
    class_model = runs.load(runs.folder(runs.FLOW_CLASS_DECAY, name))
    train = data.load_mnist("train")[0][: min(ideal_cfg.machine_train_images, flow.train_images)]

    def sdedit():
        backend = flow_backend.project_backend(name)
        estimate = diffusion.guided(backend, backend.embed(""), backend.embed(""), tricks.guidance)
        return explore.sdedit_slider(estimate, test32[:1], diffusion.strided_timesteps(), backend.alphas_cumprod)

    return {
        "01 sigma": lambda: explore.sigma_slider(runs.load(runs.folder(runs.DENOISER, name) / "last.pt"), test28),
        "02 trajectory t": lambda: explore.trajectory_slider(course, noise[:8], flow.steps),
        "03 guidance gamma": lambda: explore.guidance_slider(class_model, noise, torch.arange(10),
                                                             profile.settings("flow_class", name).steps),
        "04 SDEdit i_start": sdedit,
        "05 ELS patch size P": lambda: explore.els_patch_slider(course, data.starting_noise(), ideal_cfg.steps, train,
                                                                ideal_cfg.candidates),
    }


def slider_values(slider) -> list:
    """Every value a slider can take: its options, or min, min + step, ..., max."""
    if hasattr(slider, "options"):
        return list(slider.options)
    return [slider.min + i * slider.step for i in range(round((slider.max - slider.min) / slider.step) + 1)]


def spread(values: list, k: int) -> list:
    """k of the values, evenly spread with both ends (all of them if k is 0 or at least their number)."""
    if k <= 0 or k >= len(values):
        return values
    return [values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)] if k > 1 else values[:1]


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=profile.PROFILES, default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--values", type=int, default=4,
                        help="slider values visited per explorer, evenly spread with both ends (0: all; default 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"profile {args.profile}, {torch.get_num_threads()} threads; seconds per slider move")
    print(f"{'explorer':22s} {'visited':>7s} {'build':>7s} {'first visit, slowest':>21s} {'later visit, slowest':>21s}")
    slowest, slowest_recall = (0.0, ""), (0.0, "")
    for label, build in explorers(args.profile).items():
        built = [None]
        build_time = seconds(lambda: built.__setitem__(0, build()))
        explorer = built[0]
        values = spread(slider_values(explorer.slider), args.values)
        first = max(seconds(lambda: explorer.show(v)) for v in values)
        later = max(seconds(lambda: explorer.show(v)) for v in values)
        slowest, slowest_recall = max(slowest, (first, label)), max(slowest_recall, (later, label))
        print(f"{label:22s} {len(values):7d} {build_time:7.2f} {first:21.3f} {later:21.4f}")
    print(f"slowest slider move: {slowest[0]:.3f} s ({slowest[1]}); slowest recall: "
          f"{slowest_recall[0] * 1000:.2f} ms ({slowest_recall[1]})")


if __name__ == "__main__":
    main()
