"""Cost of one ELS sampling step against the number of training images.

    .venv/bin/python benchmarks/els_cost.py [--sizes 100 1000 10000] [--batch 1] [--patch 3 15]

For each training-set size N and patch size P, each in a fresh process, prints the time of one
`els_denoiser` call on a batch of 32 x 32 noisy images at t = 0.5, with and without deduplication of
identical patches, and, in a second process with glibc's mmap threshold fixed at 1 MiB so that freed
blocks leave the resident set, its working memory: the peak resident memory during the call (sampled
every millisecond) above what the process held just before it, data loaded. The result with deduplication is checked against the
plain one.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's helpers, whatever the venv holds


# For the memory runs only (it slows the call down): glibc otherwise raises its mmap threshold after the
# first large free and keeps freed blocks in the heap, so resident memory would count the allocator's
# cache rather than what the call holds.
MEMORY_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(n: int, p: int, batch: int, deduplicate: bool) -> dict:
    import torch

    from helpers import ideal
    from helpers.foundation import data

    torch.manual_seed(0)
    train = data.load_mnist("train")[0][:n].contiguous()
    x_t = 0.5 * train[:batch] + 0.5 * torch.randn(batch, 1, 32, 32)
    baseline, peak, done = rss_mib(), [0.0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    out = ideal.els_denoiser(x_t, 0.5, train, p, deduplicate=deduplicate)
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    return {"seconds": seconds, "peak_mib": max(peak[0], rss_mib()) - baseline, "checksum": float(out.double().sum())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--patch", type=int, nargs="+", default=[3, 15])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, p, batch, dedup = map(int, args.child)
        print(json.dumps(measure(n, p, batch, bool(dedup))))
        return

    import torch
    print(f"ELS denoiser, one step at t = 0.5, batch {args.batch}, 32 x 32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'N':>6} {'P':>3} {'keys':>10} {'plain s':>9} {'dedup s':>9} {'peak MiB plain':>15} {'dedup':>7}")
    for n in args.sizes:
        for p in args.patch:
            timed, held = [], []
            for dedup in (0, 1):
                child = [sys.executable, __file__, "--child", str(n), str(p), str(args.batch), str(dedup)]
                timed.append(json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout))
                held.append(json.loads(subprocess.run(child, capture_output=True, text=True, check=True,
                                                      env=MEMORY_ENV).stdout))
            assert abs(timed[0]["checksum"] - timed[1]["checksum"]) < 1e-2 * args.batch, timed
            keys = n * (32 - p + 1) ** 2
            print(f"{n:>6} {p:>3} {keys:>10,} {timed[0]['seconds']:>9.2f} {timed[1]['seconds']:>9.2f} "
                  f"{held[0]['peak_mib']:>15.0f} {held[1]['peak_mib']:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
