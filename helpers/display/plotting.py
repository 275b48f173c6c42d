"""Figures: image grids, labelled image tables and loss curves, each titled with the active profile.

Images are shown as (x - low) / (high - low) clipped to [0, 1], for value_range = (low, high)."""
import matplotlib.pyplot as plt
import torch
import torchvision

from helpers.foundation.validate import count, finite_number
from helpers.training.profile import tag


def _as_display(images: torch.Tensor, value_range) -> torch.Tensor:
    low, high = (finite_number(v, "value_range's ends") for v in value_range)
    if not low < high:
        raise ValueError(f"value_range must be (low, high) with low < high, not {tuple(value_range)}.")
    return ((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1)


def show_table(rows, title: str, row_labels=(), col_labels=(), value_range=(-1.0, 1.0), size: float = 1.1):
    """Draw a table of single images: `rows` is a list of tensors [N, C, H, W], one tensor per row.

    Rows may differ in length; the cells past a short row's end stay empty."""
    if not rows or not any(len(row) for row in rows):
        raise ValueError("show_table needs at least one row holding at least one image.")
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 1.0, size * n_rows + 0.5), squeeze=False)
    for i, row in enumerate(rows):
        for j, image in enumerate(_as_display(row, value_range)):
            ax = axes[i][j]
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=9)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=9, rotation=0, ha="right", va="center")
        for j in range(len(row), n_cols):
            axes[i][j].axis("off")
    fig.suptitle(f"{title} {tag()}")
    fig.tight_layout()
    return fig


def plot_losses(curves: dict, title: str, log: bool = True, iterations_per_epoch: int | None = None):
    """Plot per-iteration loss curves (`curves`: label -> list of losses) on one axis."""
    if not curves:
        raise ValueError("plot_losses needs at least one curve (label -> list of losses).")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, history in curves.items():
        ax.plot(history, label=label, linewidth=0.8)
    if iterations_per_epoch:
        for k in range(iterations_per_epoch, max(len(h) for h in curves.values()), iterations_per_epoch):
            ax.axvline(k, color="0.85", linewidth=0.6, zorder=0)
    ax.set_xlabel("iteration" + (" (grey lines: epochs)" if iterations_per_epoch else ""))
    ax.set_ylabel("training loss (MSE)")
    if log:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend()
    ax.set_title(f"{title} {tag()}")
    fig.tight_layout()
    return fig


def show_grids(panels: dict, title: str, nrow: int = 8, value_range=(-1.0, 1.0), size: float = 0.45):
    """Several image grids side by side (`panels`: subtitle -> images [N, C, H, W]), under one title."""
    if not panels:
        raise ValueError("show_grids needs at least one panel (subtitle -> images).")
    nrow = count(nrow, "nrow")
    first = next(iter(panels.values()))
    rows = (len(first) + nrow - 1) // nrow
    fig, axes = plt.subplots(1, len(panels), figsize=(size * nrow * len(panels) + 0.5, size * rows + 0.9),
                             squeeze=False)
    for ax, (subtitle, images) in zip(axes[0], panels.items()):
        grid = torchvision.utils.make_grid(_as_display(images, value_range), nrow=nrow, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(subtitle, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{title} {tag()}")
    fig.tight_layout()
    return fig


def plot_calibration(record: dict, reference: dict | None = None, reference_label: str = "reference"):
    """Left: the median (over samples) MSE between machine and network x0 estimates against the patch
    size, at a few times t. Right: the calibrated patch size P(t), beside an optional reference schedule."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    mse = record["mse"].median(-1).values                          # [steps, candidates]
    times, candidates = record["times"], record["candidates"]
    for i in torch.linspace(0, len(times) - 1, min(5, len(times))).round().long().unique().tolist():
        line, = left.plot(candidates, mse[i], marker=".", label=f"t = {times[i]:.2f}")
        best = int(mse[i].argmin())
        left.plot(candidates[best], mse[i, best], "o", color=line.get_color(), markersize=8, fillstyle="none")
    left.set(xlabel="patch size P", ylabel="MSE, machine vs network x0", yscale="log",
             title="calibration curves (circle: best P)")
    left.legend(fontsize=8)
    right.step(times, record["sizes"], where="mid", marker="o", label="calibrated")
    if reference:
        right.plot(reference["times"], reference["sizes"], "x--", color="0.5", label=reference_label)
    right.set(xlabel="t (1 = noise, 0 = data)", ylabel="patch size P", title="locality schedule P(t)")
    right.invert_xaxis()
    right.legend(fontsize=8)
    fig.suptitle(f"Locality calibration {tag()}")
    fig.tight_layout()
    return fig
