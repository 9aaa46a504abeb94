#!/usr/bin/env python
"""Thread scaling: seconds per epoch of one workload at several thread counts.

Each thread count runs ``benchmarks/run.py`` in a fresh subprocess, with
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` set as well
as ``--threads``, so that BLAS and OpenMP pools are created at that size.  The
table gives s/epoch, speedup over the smallest thread count (normally 1) and
parallel efficiency (speedup / threads) per library.

Run ``python benchmarks/scaling.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RUN_PY = HERE / "run.py"
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks" / "scaling.rst"
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

sys.path.insert(0, str(HERE))
from run import (  # noqa: E402  (after the path set-up)
    ALL_LIBRARIES,
    TRAIN_WORKLOADS,
    available_cores,
    header_lines,
    plain_table,
    rst_list_table,
)


# the libraries whose threads --threads binds (XLA sizes JAX's pool itself)
SCALING_LIBRARIES = ("cbp", "sklearn", "torch")


def default_thread_counts():
    """Powers of two up to the number of cores, plus the core count itself."""
    cores = available_cores()
    counts = {cores}
    n = 1
    while n <= cores:
        counts.add(n)
        n *= 2
    return ",".join(str(c) for c in sorted(counts))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="mnist-256-128", choices=TRAIN_WORKLOADS)
    parser.add_argument("--threads", default=default_thread_counts(),
                        help="comma-separated thread counts, e.g. 1,2,4,8,16 "
                        "(default: powers of two up to the core count)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per fit (1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per thread count; the median is reported (3)")
    parser.add_argument("--libs", default=",".join(SCALING_LIBRARIES),
                        help="comma-separated libraries, of " + ", ".join(ALL_LIBRARIES)
                        + " (default: " + ",".join(SCALING_LIBRARIES) + ")")
    parser.add_argument("--quick", action="store_true", help="small data (smoke test)")
    parser.add_argument("--mnist", default=None, help="path to mnist.npz (see run.py)")
    parser.add_argument("--peer-as-cbp", action="store_true",
                        help="debugging: use scikit-learn's estimators in place of cbp")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="reStructuredText output file ('-' to skip)")
    args = parser.parse_args(argv)
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error("--threads takes comma-separated integers, e.g. 1,2,4")
    if not args.threads or min(args.threads) < 1:
        parser.error("--threads needs thread counts of at least 1")
    return args


def child_command(args, threads, json_path):
    """The ``run.py`` command line for one thread count."""
    cmd = [sys.executable, str(RUN_PY), "--only", args.workload,
           "--threads", str(threads), "--epochs", str(args.epochs),
           "--rounds", str(args.rounds), "--libs", args.libs,
           "--output", "-", "--json", str(json_path)]
    if args.quick:
        cmd.append("--quick")
    if args.mnist:
        cmd += ["--mnist", args.mnist]
    if args.peer_as_cbp:
        cmd.append("--peer-as-cbp")
    return cmd


def run_child(args, threads):
    """Run ``run.py`` at ``threads`` threads in a fresh process; return its JSON."""
    env = dict(os.environ, **{var: str(threads) for var in THREAD_ENV_VARS})
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "results.json"
        proc = subprocess.run(child_command(args, threads, json_path), env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not json_path.exists():
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"error: run.py failed at {threads} threads "
                             f"(exit status {proc.returncode})")
        return json.loads(json_path.read_text())


def scaling_rows(per_threads):
    """Rows of (library, threads, s/epoch, speedup, efficiency, % of peak)."""
    base_threads = min(per_threads)
    base = {r["library"]: r["seconds"] for r in per_threads[base_threads]["train"]}
    rows = []
    libraries = [r["library"] for r in per_threads[base_threads]["train"]]
    for library in libraries:
        for threads in sorted(per_threads):
            row = next(r for r in per_threads[threads]["train"]
                       if r["library"] == library)
            speedup = base[library] / row["seconds"]
            rows.append([library, str(threads), f"{row['seconds']:.4f}",
                         f"{speedup:.2f}", f"{speedup * base_threads / threads:.2f}",
                         f"{row['gflops']:.1f}", f"{100 * row['peak_fraction']:.1f}"])
    return rows


def report(args, per_threads):
    """The plain-text and reStructuredText reports."""
    base = min(per_threads)
    headers = ["library", "threads", "s/epoch", f"speedup vs {base}",
               "efficiency", "GFLOP/s", "% of GEMM peak"]
    rows = scaling_rows(per_threads)
    first = per_threads[base]
    workload = first["workloads"][0]
    peaks = ", ".join(
        f"{t} threads: " + ", ".join(f"{v:.1f}" for v in per_threads[t]
                                     ["gemm_peak_gflops"].values())
        for t in sorted(per_threads))
    machine = dict(first["machine"])
    machine["command"] = " ".join(["python", "benchmarks/scaling.py", *sys.argv[1:]])
    machine["cores"] = f"{os.cpu_count()} ({available_cores()} available)"
    machine["thread pools"] = [f"(at {base} threads) {line}"
                               for line in machine["thread pools"]]
    info = header_lines({"machine": machine, "gemm_peak_gflops": {}})
    notes = [f"workload {workload}", f"GEMM peak GFLOP/s by threads: {peaks}",
             *[f"note: {n}" for n in first["notes"]]]
    plain = "\n".join([*info, *notes, "", plain_table(headers, rows)])
    title = f"Thread scaling: {args.workload}"
    rst = "\n".join([title, "=" * len(title), "", "::", "",
                     *(f"   {line}" for line in info + notes), "",
                     rst_list_table(f"Seconds per epoch of {args.workload} by threads",
                                    headers, rows), ""])
    return plain, rst


def main(argv=None):
    args = parse_args(argv)
    cores = available_cores()
    per_threads = {}
    for threads in args.threads:
        if threads > cores:
            print(f"warning: {threads} threads on {cores} cores oversubscribes",
                  flush=True)
        print(f"running {args.workload} with {threads} thread(s)", flush=True)
        results = run_child(args, threads)
        if not results["train"]:
            raise SystemExit("error: nothing measured: " + "; ".join(results["notes"]))
        per_threads[threads] = results
    plain, rst = report(args, per_threads)
    print()
    print(plain)
    if args.output != "-":
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(rst)
        print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
