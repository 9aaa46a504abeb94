"""Check the performance targets against several runs of ``run.py``.

Each target is a ratio read from a run's JSON (``run.py --json``): cbp's
median over a peer's, cbp's share of the GEMM peak, or cbp's default
threads over ``n_jobs=1`` on the busy machine. A target holds when it is
met in at least ``--need`` of the runs (4 of 5 by default)::

    python benchmarks/run.py --json run1.json --output run1.rst   # five times
    python benchmarks/targets.py run1.json run2.json run3.json run4.json run5.json

The ``bound`` column is the best ratio cbp could reach against that peer
if it ran at 100 % of the GEMM peak measured in the same run: the peer's
own share of the peak (``flops / peak`` over the peer's seconds), as a
median over the runs. Where the bound is above the target, no speed of
cbp's meets it on that machine. ``reachable`` counts the runs whose own
bound meets the target; a target reachable in fewer than ``--need`` runs
cannot hold on that machine, however fast cbp becomes, and is listed
under the table. ``--rst FILE`` also writes the table as
reStructuredText.
"""

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """One target: ``kind`` is "ratio" (cbp over ``peer``), "peak" (cbp's
    share of the GEMM peak, at least ``limit``) or "busy"."""

    name: str
    section: str
    workload: str
    peer: str | None
    kind: str
    limit: float


#: The targets of issue 16, each named once.
TARGETS = (
    Target("MNIST epoch / GEMM-only epoch", "train", "mnist-256-128", "gemm-only",
           "ratio", 1.10),
    Target("MNIST epoch, share of sgemm peak", "train", "mnist-256-128", None, "peak", 0.85),
    Target("MNIST epoch / scikit-learn", "train", "mnist-256-128", "sklearn", "ratio", 0.35),
    Target("MNIST epoch / torch eager", "train", "mnist-256-128", "torch", "ratio", 0.50),
    Target("MNIST epoch / torch.compile", "train", "mnist-256-128", "torch.compile",
           "ratio", 0.50),
    Target("MNIST epoch / JAX (epoch jitted)", "train", "mnist-256-128", "jax", "ratio", 0.75),
    Target("digits epoch / scikit-learn", "train", "digits", "sklearn", "ratio", 0.15),
    Target("regression epoch / scikit-learn", "train", "regression", "sklearn", "ratio", 0.12),
    Target("predict_proba / scikit-learn", "predict", "predict-proba", "sklearn", "ratio", 0.60),
    Target("busy machine: default / n_jobs=1", "busy", "busy", "cbp n_jobs=1", "ratio", 1.10),
)


def _row(results, section, workload, library):
    for row in results.get(section, []):
        if row["workload"] == workload and row["library"] == library:
            return row
    return None


def measure(target, results):
    """The target's value in one run and the bound at 100 % of the peak
    (None where the run lacks the rows)."""
    cbp = _row(results, target.section, target.workload, "cbp")
    if cbp is None:
        return None, None
    if target.kind == "peak":
        return cbp["peak_fraction"], 1.0
    peer = _row(results, target.section, target.workload, target.peer)
    if peer is None:
        return None, None
    value = cbp["seconds"] / peer["seconds"]
    # a peer of cbp itself (busy) or the GEMMs alone bound nothing useful
    bound = peer["peak_fraction"] if target.peer in ("sklearn", "torch",
                                                     "torch.compile", "jax",
                                                     "gemm-only") else None
    return value, bound


def met(target, value):
    if value is None:
        return False
    return value >= target.limit if target.kind == "peak" else value <= target.limit


def table(runs, need):
    """Header and body rows (the target, its value per run, runs met,
    whether it holds, the median bound, runs in which the bound meets the
    target), and the names of the targets that cannot hold: reachable in
    fewer than ``need`` runs."""
    header = (["target", "limit"] + [f"run {i + 1}" for i in range(len(runs))]
              + ["met", "holds", "bound", "reachable"])
    body = []
    out_of_reach = []
    for target in TARGETS:
        values, bounds = zip(*(measure(target, r) for r in runs))
        count = sum(met(target, v) for v in values)
        known = [b for b in bounds if b is not None]
        limit = f">= {target.limit:.0%}" if target.kind == "peak" else f"<= {target.limit:.2f}"
        cells = [(f"{v:.0%}" if target.kind == "peak" else f"{v:.2f}") if v is not None
                 else "-" for v in values]
        bound = f"{statistics.median(known):.2f}" if known and target.kind != "peak" else "-"
        reachable = "-"
        if known:
            n_reachable = sum(met(target, b) for b in known)
            reachable = f"{n_reachable}/{len(known)}"
            if n_reachable < need:
                out_of_reach.append(target.name)
        body.append([target.name, limit] + cells
                    + [f"{count}/{len(runs)}", "yes" if count >= need else "no", bound,
                       reachable])
    return header, body, out_of_reach


def plain(header, body):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def rst(header, body, caption):
    lines = [f".. list-table:: {caption}", "   :header-rows: 1", ""]
    for row in [header] + body:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by run.py --json")
    parser.add_argument("--need", type=int, default=None,
                        help="runs in which a target must be met (default: all but one)")
    parser.add_argument("--rst", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    runs = [json.loads(Path(p).read_text()) for p in args.runs]
    need = args.need if args.need is not None else max(1, len(runs) - 1)
    header, body, out_of_reach = table(runs, need)
    print(plain(header, body))
    for name in out_of_reach:
        print(f"cannot hold on this machine: {name} (even at 100 % of the GEMM peak)")
    if args.rst:
        caption = (f"Targets over {len(runs)} consecutive runs (held: met in at "
                   f"least {need}); bound: the best ratio at 100 % of the GEMM peak; "
                   f"reachable: runs in which that bound meets the target")
        Path(args.rst).write_text(rst(header, body, caption))
        print(f"wrote {args.rst}")


if __name__ == "__main__":
    main()
