#!/usr/bin/env python3
"""Figures for a `repshare study` output folder (run by the study itself):

  cka_heatmaps.png   S between stages: donor x donor, receiver x receiver, donor x receiver
  correlations.png   |Pearson r| of each metric with merged accuracy, same- and cross-stage
  acc_vs_s.png       merged accuracy against S, same-stage and cross-stage, with r

  scripts/plot_study.py DIR
"""
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_matrix(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    cols = rows[0][1:]
    names = [r[0] for r in rows[1:]]
    values = [[float(v) for v in r[1:]] for r in rows[1:]]
    return names, cols, values


def heatmaps(d, summary):
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    titles = [("cka_donor.csv", "donor x donor (%s)" % summary["donor"]),
              ("cka_receiver.csv", "receiver x receiver (%s)" % summary["receiver"]),
              ("cka_cross.csv", "donor (rows) x receiver (cols)")]
    for ax, (name, title) in zip(axes, titles):
        rows, cols, m = read_matrix(os.path.join(d, name))
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=60, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                ax.text(j, i, "%.2f" % v, ha="center", va="center", fontsize=6,
                        color="white" if v < 0.5 else "black")
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="CKA S (%s)" % summary["estimator"])
    fig.savefig(os.path.join(d, "cka_heatmaps.png"), dpi=110, bbox_inches="tight")


def correlations(d, summary):
    metrics = ["S", "params", "size", "flops"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for k, (key, label) in enumerate([("same_stage", "same-stage"), ("cross_stage", "cross-stage")]):
        vals = [abs(summary[key][m]["pearson"] or 0) for m in metrics]
        bars = ax.bar([x + (k - 0.5) * width for x in range(len(metrics))], vals, width, label=label)
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, "%.2f" % v, ha="center", fontsize=8)
    ax.set_xticks(range(len(metrics)), ["S (CKA)", "#Params", "Size", "FLOPs"])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("|Pearson r| with merged accuracy")
    ax.set_title("%s -> %s, %d images" % (summary["donor"], summary["receiver"], summary["images"]))
    ax.legend()
    fig.savefig(os.path.join(d, "correlations.png"), dpi=110, bbox_inches="tight")


def scatter(d, summary):
    with open(os.path.join(d, "pairs.csv")) as f:
        pairs = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (key, same) in zip(axes, [("same_stage", True), ("cross_stage", False)]):
        sel = [p for p in pairs if (p["donor_stage"] == p["receiver_stage"]) or not same]
        xs = [float(p["S"]) for p in sel]
        ys = [float(p["acc"]) for p in sel]
        ax.scatter(xs, ys, s=18)
        if same:
            for p, x, y in zip(sel, xs, ys):
                ax.annotate(p["donor_stage"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(summary["receiver_unshared_top1"], ls="--", c="grey", lw=1, label="unshared")
        if summary["collapse"]["threshold_S"] is not None:
            ax.axvline(summary["collapse"]["threshold_S"], ls=":", c="red", lw=1, label="collapse S")
        r = summary[key]["S"]["pearson"]
        ax.set_title("%s: Pearson r = %s" % (key.replace("_", "-"), "%.3f" % r if r is not None else "n/a"))
        ax.set_xlabel("CKA S (%s)" % summary["estimator"])
        ax.legend(fontsize=8)
    axes[0].set_ylabel("merged top-1")
    fig.savefig(os.path.join(d, "acc_vs_s.png"), dpi=110, bbox_inches="tight")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    with open(os.path.join(d, "summary.json")) as f:
        summary = json.load(f)
    heatmaps(d, summary)
    correlations(d, summary)
    scatter(d, summary)
    print("figures in %s: cka_heatmaps.png correlations.png acc_vs_s.png" % d)


if __name__ == "__main__":
    main()
