"""Charts of the benchmark results in ``docs/benchmarks/``.

``benchmarks/run.py`` writes ``results.json`` beside the table
(``results.rst``); the consecutive runs behind the performance targets are
kept in ``runs/run*.json``. This script, run when the documentation is
built, draws from them: seconds per training epoch (median, with the min
of the run's rounds as a whisker: the noise within a run), the share of
the GEMM peak and the cost of ``predict_proba``; the busy-machine
scenario; and each target's value in every run (the noise between runs).
"""

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# the plot directive runs this with docs/ as the working directory
HERE = Path("benchmarks")
RESULTS = HERE / "results.json"
RUNS = sorted((HERE / "runs").glob("run*.json"))
LIBRARIES = ["cbp", "sklearn", "torch", "torch.compile", "jax", "gemm-only"]
LABELS = {"cbp": "cbp", "sklearn": "scikit-learn", "torch": "PyTorch",
          "torch.compile": "torch.compile", "jax": "JAX (jit epoch)",
          "gemm-only": "GEMMs alone", "cbp n_jobs=1": "cbp n_jobs=1"}
COLORS = {"cbp": "C0", "sklearn": "C1", "torch": "C2", "torch.compile": "C4",
          "jax": "C3", "gemm-only": "C7", "cbp n_jobs=1": "C9"}

results = json.loads(RESULTS.read_text())


def by_workload(rows):
    """{workload: {library: row}}, workloads in the order of the file."""
    table = {}
    for row in rows:
        table.setdefault(row["workload"], {})[row["library"]] = row
    return table


def grouped_bars(ax, table, value, fmt, libraries=LIBRARIES, low=None, rotation=0):
    """One group of bars per workload, one bar per library, each labelled;
    ``low`` (a row's lower figure) draws a whisker from it to the bar's top."""
    workloads = list(table)
    libraries = [lib for lib in libraries if any(lib in table[w] for w in workloads)]
    width = 0.8 / len(libraries)
    x = np.arange(len(workloads))
    for k, lib in enumerate(libraries):
        rows = [table[w].get(lib) for w in workloads]
        heights = np.array([value(r) if r else np.nan for r in rows])
        offsets = x + (k - (len(libraries) - 1) / 2) * width
        bars = ax.bar(offsets, heights, width, label=LABELS[lib], color=COLORS[lib])
        if low is not None:
            lows = np.array([low(r) if r else np.nan for r in rows])
            below = np.clip(heights - lows, 0, None)
            ax.errorbar(offsets, heights, yerr=[below, np.zeros_like(below)],
                        fmt="none", ecolor="black", elinewidth=0.8, capsize=1.5)
        ax.bar_label(bars, labels=[fmt(h) if np.isfinite(h) else "" for h in heights],
                     fontsize=6, padding=2, rotation=rotation)
    ax.set_xticks(x, workloads)
    ax.margins(y=0.15)


def seconds(row):
    return row["seconds"]


def seconds_min(row):
    return row.get("seconds_min", row["seconds"])


def style(axes):
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)


machine = results["machine"]
title = (f"{machine['cpu']}, {machine['cores'].split()[0]} cores: run of "
         f"{machine['date']} (docs/benchmarks/results.json)")

# Figure 1: the run's training and prediction figures
fig, (ax_time, ax_peak, ax_pred) = plt.subplots(
    1, 3, figsize=(13.5, 4.4), gridspec_kw=dict(width_ratios=[4.5, 4.5, 1.6])
)
train = by_workload(results["train"])
# log scale: the workloads' epochs span three orders of magnitude
ax_time.set_yscale("log")
grouped_bars(ax_time, train, seconds, lambda s: f"{s:.3g}", low=seconds_min, rotation=90)
ax_time.set_ylim(top=ax_time.get_ylim()[1] * 6)
ax_time.set_ylabel("seconds per epoch (log; whisker: min)")
ax_time.set_title("Training: Adam, batch 200")
ax_time.legend(loc="upper right", fontsize=7, ncols=3)

grouped_bars(ax_peak, train, lambda r: 100 * r["peak_fraction"], lambda p: f"{p:.0f}",
             rotation=90)
ax_peak.set_ylabel("% of the GEMM peak (higher is better)")
ax_peak.set_ylim(0, 115)
ax_peak.set_title("Training: share of the BLAS's peak")

predict = by_workload(results["predict"])
grouped_bars(ax_pred, predict, seconds, lambda s: f"{s:.3g}", low=seconds_min)
ax_pred.set_ylabel("seconds per call")
ax_pred.set_title("predict_proba")
fig.suptitle(title, fontsize=9)
style((ax_time, ax_peak, ax_pred))
fig.tight_layout()

# Figure 2: the busy machine
busy = by_workload(results.get("busy", []))
if busy:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    grouped_bars(ax, busy, seconds, lambda s: f"{s:.3g}", low=seconds_min,
                 libraries=["cbp", "cbp n_jobs=1", "sklearn", "torch"])
    ax.set_ylabel("seconds per epoch (whisker: min)")
    ax.set_title("Beside one spinning process (30,000 MNIST rows)", fontsize=9)
    ax.legend(fontsize=7)
    style((ax,))
    fig.tight_layout()

# Figure 3: each target in every run, as a multiple of its limit
if RUNS:
    sys.path.insert(0, str((Path("..") / "benchmarks").resolve()))
    import targets as target_table  # benchmarks/targets.py

    runs = [json.loads(p.read_text()) for p in RUNS]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    names = []
    for i, target in enumerate(target_table.TARGETS):
        values, bounds = zip(*(target_table.measure(target, r) for r in runs))
        known = [b for b in bounds if b is not None]
        if known and target.kind != "peak":
            # the best cbp could do at 100 % of the GEMM peak
            ax.scatter([i], [np.median(known) / target.limit], marker="_", s=200,
                       color="black", zorder=2,
                       label="at 100 % of the GEMM peak" if not names else None)
        # <= 1 is met, whichever way the target points
        scaled = [(target.limit / v if target.kind == "peak" else v / target.limit)
                  if v else np.nan for v in values]
        ax.scatter(np.full(len(scaled), i) + np.linspace(-0.2, 0.2, len(scaled)), scaled,
                   s=14, color=["C2" if s <= 1 else "C3" for s in scaled], zorder=3)
        names.append(target.name)
    ax.axhline(1, color="black", linewidth=0.8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("value / limit (<= 1: met)")
    ax.set_title(f"The targets in {len(runs)} consecutive runs (green: met)", fontsize=9)
    style((ax,))
    fig.tight_layout()
