"""Training throughput (images/s) of each UNet on this machine, with and without each speed-up.

    .venv/bin/python benchmarks/train_throughput.py [--hidden 32] [--batch 128] [--steps 6] [--compile]

One flow-matching training step (forward, backward, Adam) per iteration on random 32 x 32 inputs; the first
two steps are warm-up. Variants: plain fp32; channels_last memory format; a larger batch; torch.compile
(with --compile: slow to compile on a CPU); bf16 autocast on a GPU.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds
from helpers import flow_matching
from helpers.attention_unet import AttentionUNet
from helpers.course_unet import ConditionalCourseUNet
from helpers.foundation.hardware import pick_device


def throughput(model, batch: int, steps: int, device, channels_last=False, compile_model=False, amp=False) -> float:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 32, 32, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    for step in range(steps + 2):
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = flow_matching.loss(forward, x, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = pick_device()
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, hidden = {args.hidden}")
    variants = {"fp32 (baseline)": {}, "channels_last": dict(channels_last=True),
                f"batch {2 * args.batch}": dict(batch=2 * args.batch)}
    if args.compile:
        variants["torch.compile"] = dict(compile_model=True)
    if device.type == "cuda":
        variants["bf16 autocast"] = dict(amp=True)
    for name, make in (("ConditionalCourseUNet", ConditionalCourseUNet), ("AttentionUNet", AttentionUNet)):
        for variant, options in variants.items():
            torch.manual_seed(0)
            options = {"batch": args.batch, **options}
            rate = throughput(make(hidden=args.hidden, image_size=32, num_classes=10), steps=args.steps,
                              device=device, **options)
            print(f"{name:22s} {variant:16s} {rate:8.1f} images/s")


if __name__ == "__main__":
    main()
