"""Charts of the benchmark results in ``docs/benchmarks/results.json``.

``benchmarks/run.py`` writes that file beside the table
(``results.rst``); this script, run when the documentation is built,
draws the same figures: seconds per training epoch, the share of the
GEMM peak, and the cost of ``predict_proba``.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# the plot directive runs this with docs/ as the working directory
RESULTS = Path("benchmarks") / "results.json"
LIBRARIES = ["cbp", "sklearn", "torch"]
LABELS = {"cbp": "cbp", "sklearn": "scikit-learn", "torch": "PyTorch"}
COLORS = {"cbp": "C0", "sklearn": "C1", "torch": "C2"}

results = json.loads(RESULTS.read_text())


def by_workload(rows):
    """{workload: {library: row}}, workloads in the order of the file."""
    table = {}
    for row in rows:
        table.setdefault(row["workload"], {})[row["library"]] = row
    return table


def grouped_bars(ax, table, value, fmt, rotation=0):
    """One group of bars per workload, one bar per library, each labelled."""
    workloads = list(table)
    libraries = [lib for lib in LIBRARIES if any(lib in table[w] for w in workloads)]
    width = 0.8 / len(libraries)
    x = np.arange(len(workloads))
    for k, lib in enumerate(libraries):
        heights = [value(table[w][lib]) if lib in table[w] else np.nan for w in workloads]
        bars = ax.bar(x + (k - (len(libraries) - 1) / 2) * width, heights, width,
                      label=LABELS[lib], color=COLORS[lib])
        ax.bar_label(bars, labels=[fmt(h) if np.isfinite(h) else "" for h in heights],
                     fontsize=7, padding=2, rotation=rotation)
    ax.set_xticks(x, workloads)
    ax.margins(y=0.15)


fig, (ax_time, ax_peak, ax_pred) = plt.subplots(
    1, 3, figsize=(12.5, 4.2), gridspec_kw=dict(width_ratios=[4, 4, 1.6])
)

train = by_workload(results["train"])
# log scale: the workloads' epochs span three orders of magnitude
ax_time.set_yscale("log")
grouped_bars(ax_time, train, lambda r: r["seconds"], lambda s: f"{s:.3g}", rotation=90)
ax_time.set_ylim(top=ax_time.get_ylim()[1] * 4)
ax_time.set_ylabel("seconds per epoch (log scale; lower is faster)")
ax_time.set_title("Training: Adam, batch 200")
ax_time.legend(loc="upper right", fontsize=8, ncols=3)

grouped_bars(ax_peak, train, lambda r: 100 * r["peak_fraction"], lambda p: f"{p:.0f}")
ax_peak.set_ylabel("% of the GEMM peak (higher is better)")
ax_peak.set_ylim(0, 100)
ax_peak.set_title("Training: share of the BLAS's peak")

predict = by_workload(results["predict"])
grouped_bars(ax_pred, predict, lambda r: r["seconds"], lambda s: f"{s:.3g}")
ax_pred.set_ylabel("seconds per call")
ax_pred.set_title("predict_proba")

machine = results["machine"]
fig.suptitle(
    f"{machine['cpu']}, {machine['cores'].split()[0]} cores: run of {machine['date']} "
    f"(docs/benchmarks/results.json)",
    fontsize=9,
)
for ax in (ax_time, ax_peak, ax_pred):
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
