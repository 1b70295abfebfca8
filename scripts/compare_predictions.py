#!/usr/bin/env python3
"""Lines up two per-image prediction CSVs (path,label,top1..top5: from
`repshare eval --predictions` and scripts/eval_reference.py) and reports each
side's top-1/top-5, how often their top-1 agree, and the images where they do
not. Exits 1 when the agreement is below --min-agreement.

Images are matched by file name (the two runs may name the list's folder
differently); every image must be on both sides.

  scripts/compare_predictions.py out/lite0_engine.csv out/lite0_reference.csv \\
      --min-agreement 0.995 --json out/lite0_compare.json
"""
import argparse
import csv
import json
import os
import sys


def fail(message):
    sys.exit("error: " + message)


def read_predictions(path):
    """{file name: (label, [top1..top5])}"""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or header[:3] != ["path", "label", "top1"]:
                fail("%s: expected a 'path,label,top1,...' header, got %s" % (path, header))
            rows = {}
            for number, row in enumerate(reader, 2):
                try:
                    label, top = int(row[1]), [int(v) for v in row[2:]]
                except (IndexError, ValueError):
                    fail("%s line %d: expected path,label,top1..topK integers, got %s" % (path, number, row))
                name = os.path.basename(row[0])
                if name in rows:
                    fail("%s line %d: %s appears twice" % (path, number, name))
                rows[name] = (label, top)
    except OSError as e:
        fail("cannot read %s: %s" % (path, e))
    if not rows:
        fail("%s has no predictions" % path)
    return rows


def accuracy(rows):
    top1 = sum(top[0] == label for label, top in rows.values())
    top5 = sum(label in top[:5] for label, top in rows.values())
    return top1 / len(rows), top5 / len(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", help="CSV from repshare eval --predictions")
    ap.add_argument("reference", help="CSV from scripts/eval_reference.py --predictions")
    ap.add_argument("--min-agreement", type=float, default=0.995,
                    help="fraction of images whose top-1 must agree (default 0.995)")
    ap.add_argument("--json", help="write the comparison as JSON")
    args = ap.parse_args(argv)

    engine, reference = read_predictions(args.engine), read_predictions(args.reference)
    only = sorted(set(engine) ^ set(reference))
    if only:
        fail("%d images are on one side only (e.g. %s)" % (len(only), only[0]))
    for name in engine:
        if engine[name][0] != reference[name][0]:
            fail("%s: label %d in %s but %d in %s"
                 % (name, engine[name][0], args.engine, reference[name][0], args.reference))

    names = sorted(engine)
    differ = [name for name in names if engine[name][1][0] != reference[name][1][0]]
    same_top5 = sum(engine[n][1][:5] == reference[n][1][:5] for n in names)
    agreement = 1 - len(differ) / len(names)
    e1, e5 = accuracy(engine)
    r1, r5 = accuracy(reference)
    result = {
        "images": len(names),
        "engine": {"file": args.engine, "top1": e1, "top5": e5},
        "reference": {"file": args.reference, "top1": r1, "top5": r5},
        "top1_agreement": agreement,
        "top5_lists_identical": same_top5 / len(names),
        "min_agreement": args.min_agreement,
        "disagreements": [{"image": n, "label": engine[n][0], "engine_top5": engine[n][1][:5],
                           "reference_top5": reference[n][1][:5]} for n in differ],
    }
    print("images %d   engine top-1 %.2f%% top-5 %.2f%%   reference top-1 %.2f%% top-5 %.2f%%"
          % (len(names), 100 * e1, 100 * e5, 100 * r1, 100 * r5))
    print("top-1 agreement %.2f%% (%d differ), identical top-5 lists %.2f%%"
          % (100 * agreement, len(differ), 100 * same_top5 / len(names)))
    for d in result["disagreements"]:
        print("  %s label %d: engine %s reference %s"
              % (d["image"], d["label"], d["engine_top5"], d["reference_top5"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    if agreement < args.min_agreement:
        print("FAIL: top-1 agreement %.4f < %.4f" % (agreement, args.min_agreement))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
