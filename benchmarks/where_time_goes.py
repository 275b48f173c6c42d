"""Where the time goes: seconds per notebook and per section, and the samplers' distance to this CPU's peak.

    .venv/bin/python benchmarks/where_time_goes.py [NOTEBOOK ...] [--execute] [--rates] [--profile cpu]

Timings: each executed code cell stores, in ``metadata.execution``, when its input was sent
(``iopub.execute_input``) and when its reply came (``shell.execute_reply``); a cell's seconds are the
difference, and a section (a markdown heading) sums the cells below it. The notebooks read are the
committed ones by default, or any executed copies (``rendered/cpu/*.ipynb``); ``--execute`` first runs
them in the active profile (``WORKBOOK_PROFILE``) with ``instructor.execute`` into rendered/<profile>/.

Rates (``--rates``): with the shipped checkpoints of ``--profile``, the floating-point operations of one
forward pass of each time-conditioned UNet are counted by ``torch.utils.flop_counter.FlopCounterMode``
(a multiply-add counts 2); sampling runs Euler steps in inference mode on a batch, training runs
forward + backward + Adam on batches of 64 (counted the same way). GFLOP/s = counted flops / seconds,
set beside the peak fp32 rate

    peak = cores x clock x SIMD lanes (fp32) x 2 (a fused multiply-add is 2 flops) x FMA units per core,

with cores from ``os.sched_getaffinity``, the clock from /proc/cpuinfo ("cpu MHz") and the lanes from its
flags (avx512f: 16, avx2: 8, else 4); FMA units default to 2 (server cores with AVX-512: two FMA ports)
and are printed with the rest, so the figure can be redone with another assumption (``--fma-units``).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's helpers, whatever the venv holds


def _seconds(cell) -> float | None:
    execution = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in execution or "shell.execute_reply" not in execution:
        return None
    start, end = (datetime.fromisoformat(execution[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def section_seconds(path: Path) -> list[tuple[str, float]]:
    """[(section heading, seconds of its code cells)] of an executed notebook, in order."""
    cells = json.loads(path.read_text())["cells"]
    sections, heading = [], "(before the first heading)"
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            titles = [line.lstrip("#").strip() for line in source.splitlines() if line.startswith("#")]
            if titles:
                heading = titles[-1]
            continue
        seconds = _seconds(cell)
        if seconds is None:
            continue
        if not sections or sections[-1][0] != heading:
            sections.append((heading, 0.0))
        sections[-1] = (heading, sections[-1][1] + seconds)
    return sections


def print_timings(paths: list[Path]) -> None:
    total = 0.0
    for path in paths:
        sections = section_seconds(path)
        seconds = sum(s for _, s in sections)
        total += seconds
        print(f"\n{path.name}: {seconds:7.1f} s" + ("  (no execution timestamps)" if not sections else ""))
        for heading, s in sections:
            print(f"  {s:7.1f} s  {heading[:90]}")
    print(f"\nall notebooks: {total:.1f} s ({total / 60:.1f} min)")


def peak_gflops(fma_units: int) -> tuple[float, str]:
    """(peak fp32 GFLOP/s, how it was computed) from /proc/cpuinfo and the cores this process may use."""
    info = Path("/proc/cpuinfo").read_text()
    mhz = max(float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz"))
    flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
    isa, lanes = ("avx512f", 16) if "avx512f" in flags else ("avx2", 8) if "avx2" in flags else ("sse", 4)
    cores = len(os.sched_getaffinity(0))
    peak = cores * mhz / 1000 * lanes * 2 * fma_units
    how = (f"{cores} cores x {mhz / 1000:.3f} GHz (cpu MHz in /proc/cpuinfo) x {lanes} fp32 lanes ({isa}) "
           f"x 2 (FMA = 2 flops) x {fma_units} FMA units = {peak:.0f} GFLOP/s")
    return peak, how


def _count_flops(run) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def print_rates(profile: str, batch: int, steps: int, fma_units: int) -> None:
    import torch

    from helpers import flow_matching, samplers
    from helpers.training import runs

    peak, how = peak_gflops(fma_units)
    print(f"\npeak fp32: {how}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'UNet':20s} {'GFLOP/forward':>13s} {'sampling img/s':>14s} {'GFLOP/s':>8s} {'of peak':>7s} "
          f"{'training img/s':>14s} {'GFLOP/s':>8s} {'of peak':>7s}")
    for name in (runs.FLOW_TIME_COURSE, runs.FLOW_TIME_ATTENTION):
        model = runs.load(runs.folder(name, profile), device="cpu")
        x = torch.randn(batch, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            forward = _count_flops(lambda: model(x, 0.5)) / batch
            samplers.integrate(model, x, 1)  # warm-up
            start = time.perf_counter()
            samplers.integrate(model, x, steps)
            sampling = time.perf_counter() - start
        sample_rate = batch / sampling * steps  # images per second per Euler step (one evaluation each)

        model.train()
        train_batch = x[:64]
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

        def train_step():
            loss = flow_matching.loss(model, train_batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step_flops = _count_flops(train_step)
        train_step()
        start, repeats = time.perf_counter(), 5
        for _ in range(repeats):
            train_step()
        training = (time.perf_counter() - start) / repeats
        sample_gflops = forward * batch * steps / sampling / 1e9
        train_gflops = step_flops / training / 1e9
        print(f"{name:20s} {forward / 1e9:13.3f} {sample_rate:14.1f} {sample_gflops:8.1f} {sample_gflops / peak:7.1%} "
              f"{64 / training:14.1f} {train_gflops:8.1f} {train_gflops / peak:7.1%}")
    print(f"(sampling: batch {batch}, {steps} Euler steps, inference mode; img/s counts image-evaluations, "
          f"so a {steps}-step sample costs {steps} of them; training: batch 64, forward + backward + Adam)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="executed notebooks (default: notebooks/*.ipynb, the committed cpu run)")
    parser.add_argument("--execute", action="store_true",
                        help="execute them first with instructor.execute (active profile) and read the executed copies")
    parser.add_argument("--rates", action="store_true", help="also measure GFLOP/s and images/s of both UNets")
    parser.add_argument("--profile", default="cpu", help="whose shipped checkpoints --rates loads")
    parser.add_argument("--batch", type=int, default=250, help="sampling batch for --rates")
    parser.add_argument("--steps", type=int, default=5, help="Euler steps timed for --rates")
    parser.add_argument("--fma-units", type=int, default=2)
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.execute:
        from helpers.training.profile import current_profile
        out = ROOT / "rendered" / current_profile()
        subprocess.run([sys.executable, "-m", "instructor", "render", "--notebooks", str(paths[0].parent),
                        "--out", str(out)], check=True, cwd=ROOT)
        paths = [out / p.name for p in paths]
    print_timings(paths)
    if args.rates:
        print_rates(args.profile, args.batch, args.steps, args.fma_units)


if __name__ == "__main__":
    main()
