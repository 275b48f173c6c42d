"""Which prompt pairs make notebook 04's visual anagrams and hybrid images work on the project backend, each
reading beside its control (the shipped `cpu` stand-in and its 20-class classifier).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trick_pairs.py [--samples 20] [--anagrams 6,9 7,4 ...]
        [--hybrids trouser,1 dress,1 ...] [--sigmas 1 1.5 1.75 2] [--near-guidance 7]

Anagram (flip) of prompts A / B: how often the upright image reads as A and the flipped one as B, against the
control, plain samples of A flipped. Hybrid of a far (low-pass) prompt and a near (high-pass) one at each blur
sigma: the far part read as the far prompt against plain samples of the near prompt, and the near part (drawn on
black) read as the near prompt against plain samples of the far prompt. Guidance gamma = 7, the course's 33
strided DDPM steps, one batch of `--samples` from seed 200 (anagrams) or 400 (hybrids).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import diffusion
from helpers.backends import standin
from helpers.backends.flow_backend import project_backend
from helpers.measure import metrics


def pairs(texts):
    """'6,9' -> ('a 6', 'a 9'); names after 'a ' as the notebook's prompts."""
    return [tuple(f"an {w}" if w[0] in "aeiou" else f"a {w}" for w in text.split(",")) for text in texts]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--anagrams", nargs="*", default=["6,9", "7,4", "3,5", "0,8", "7,2", "2,5", "1,7", "4,7",
                                                          "sneaker,bag", "dress,trouser", "sandal,sneaker"])
    parser.add_argument("--hybrids", nargs="*", default=["trouser,1", "dress,1", "0,1", "bag,1", "pullover,7", "8,3",
                                                         "bag,7", "0,7", "coat,4"])
    parser.add_argument("--sigmas", nargs="*", type=float, default=[1.0, 1.5, 1.75, 2.0])
    parser.add_argument("--near-guidance", type=float, default=7.0, help="gamma of the near (high-pass) prompt")
    args = parser.parse_args(argv)
    backend = project_backend("cpu")
    steps, alphas, null, n = diffusion.strided_timesteps(), backend.alphas_cumprod, backend.embed(""), args.samples
    classifier = standin.trained_classifier("cpu")

    def estimate(prompt, gamma=7.0):
        return diffusion.guided(backend, backend.embed(prompt), null, gamma)

    def draw(est, seed):
        return diffusion.sample(est, n, backend.image_shape, steps, alphas, "cpu", torch.Generator().manual_seed(seed))

    def reads(images, prompt):
        return metrics.classify(classifier, images)[1].argmax(1) == standin.label_of(prompt)

    for a, b in pairs(args.anagrams):
        made = draw(diffusion.anagram([estimate(a), estimate(b)], [diffusion.IDENTITY, diffusion.FLIP]), 200)
        both = (reads(made, a) & reads(diffusion.FLIP.apply(made), b)).float().mean()
        plain = draw(estimate(a), 200)
        control = (reads(plain, a) & reads(diffusion.FLIP.apply(plain), b)).float().mean()
        print(f"anagram {a!r} / {b!r} flipped: both readings {both:.2f} (control, plain {a!r}: {control:.2f})", flush=True)
    for far, near in pairs(args.hybrids):
        plain_far, plain_near = draw(estimate(far), 400), draw(estimate(near), 400)
        for sigma in args.sigmas:
            made = draw(diffusion.hybrid(estimate(far), estimate(near, args.near_guidance), 33, sigma), 400)

            def parts(images):
                return diffusion.far_and_near(images, 33, sigma)
            far_reading, near_reading = reads(parts(made)[0], far), reads(parts(made)[1], near)
            print(f"hybrid far {far!r} / near {near!r}, sigma {sigma:g}: far {far_reading.float().mean():.2f} "
                  f"(control {reads(parts(plain_near)[0], far).float().mean():.2f}), near {near_reading.float().mean():.2f} "
                  f"(control {reads(parts(plain_far)[1], near).float().mean():.2f}), both "
                  f"{(far_reading & near_reading).float().mean():.2f}", flush=True)


if __name__ == "__main__":
    main()
