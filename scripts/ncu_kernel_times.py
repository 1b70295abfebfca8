#!/usr/bin/env python3
"""Sums Nsight Compute's per-kernel durations by kernel name (scripts/gpu-check.sh).

    ncu --metrics gpu__time_duration.sum --csv --log-file LOG.csv PROGRAM ...
    scripts/ncu_kernel_times.py LOG.csv OUT.json --model M --precision P

LOG.csv is ncu's log: its own "==PROF==" lines, then the CSV report (one row per
kernel and metric). OUT.json gets the number of kernels, their summed time, per
kernel name (cuBLAS's own kernels included) the launches and time, slowest first,
and each launch in order with its grid and block (which of a kernel's launches is
the slow one: the sums cannot tell).
Exits non-zero, naming what is missing, when the log has no durations.
"""
import argparse
import csv
import json
import os
import sys

NS_PER_UNIT = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6,
               "ms": 1e6, "second": 1e9, "s": 1e9}


def kernel_durations(lines):
    """(kernel name, ns, grid, block) per profiled kernel, in launch order."""
    rows = list(csv.DictReader(line for line in lines if line.startswith('"')))
    if not rows:
        raise ValueError("no CSV rows (did ncu profile any kernel?)")
    for column in ("Kernel Name", "Metric Name", "Metric Unit", "Metric Value"):
        if column not in rows[0]:
            raise ValueError(f"no '{column}' column; columns: {sorted(rows[0])}")
    out = []
    for r in rows:
        if r["Metric Name"] != "gpu__time_duration.sum":
            continue
        unit = r["Metric Unit"].strip()
        if unit not in NS_PER_UNIT:
            raise ValueError(f"unknown duration unit '{unit}' for {r['Kernel Name']}")
        value = float(r["Metric Value"].replace(",", ""))  # thousands separators
        out.append((r["Kernel Name"], value * NS_PER_UNIT[unit], r.get("Grid Size", ""),
                    r.get("Block Size", "")))
    if not out:
        raise ValueError("no gpu__time_duration.sum rows")
    return out


def summarize(durations):
    by_name = {}
    for name, ns, _, _ in durations:
        entry = by_name.setdefault(name, {"name": name, "launches": 0, "ms": 0.0})
        entry["launches"] += 1
        entry["ms"] += ns * 1e-6
    # A launch's name up to its parameter list: the template arguments tell the
    # variants apart, the parameters repeat.
    launches = [{"name": name.split("(")[0], "grid": grid, "block": block,
                 "us": round(ns * 1e-3, 3)} for name, ns, grid, block in durations]
    return {"kernels": len(durations), "kernel_ms": sum(d[1] for d in durations) * 1e-6,
            "by_kernel": sorted(by_name.values(), key=lambda e: -e["ms"]),
            "launches": launches}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("out")
    ap.add_argument("--model", required=True)
    ap.add_argument("--precision", required=True)
    args = ap.parse_args()
    try:
        with open(args.log, encoding="utf-8", errors="replace") as f:
            summary = summarize(kernel_durations(f))
    except (OSError, ValueError) as e:
        sys.exit(f"ncu_kernel_times: {args.log}: {e}")
    summary.update(model=args.model, precision=args.precision)
    with open(args.out + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    print(f"{summary['kernels']} kernels, {summary['kernel_ms']:.3f} ms")
    for e in summary["by_kernel"][:25]:
        print(f"{e['ms']:9.4f} ms {e['launches']:4d}x  {e['name']}")


if __name__ == "__main__":
    main()
