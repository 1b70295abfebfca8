// repshare study: CKA similarity vs merged accuracy for every stage pair of a
// donor and a receiver (the paper's table and figures).

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "merge/study.h"

#ifndef REPSHARE_SOURCE_DIR
#define REPSHARE_SOURCE_DIR "."
#endif

namespace repshare {
namespace {

// --option a,b,c: the names (none when the option is absent); an empty name ("a,,b",
// ",") is an error, not a silent "all stages".
std::vector<std::string> split_list(const std::string& s, const char* option) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size() && !s.empty()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    check(comma > start, ErrorKind::Argument, "--", option, " '", s, "' has an empty stage name");
    out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

}  // namespace

int cmd_study(const CommandArgs& argv) {
  Args args(argv, {"help", "no-plots"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare study --donor D.onnx --receiver R.onnx --labels LIST --out DIR [options]\n"
        "  --limit N                  only the first N images (0: all)\n"
        "  --donor-stages a,b,...     donor stages to share (default: names both models have)\n"
        "  --receiver-stages a,b,...  receiver stages to cut at (same default)\n"
        "  --estimator biased|unbiased  CKA estimator for S (default biased, the paper's)\n"
        "  --upsample bilinear|nearest  adapter when the donor is smaller (default bilinear)\n"
        "  --downsample area|bilinear|nearest  adapter when larger (default area)\n"
        "  --spill-dir DIR            where Gram spill files go (default $TMPDIR)\n"
        "  --no-plots                 skip scripts/plot_study.py\n%s"
        "Writes DIR/pairs.csv, summary.json, cka_{donor,receiver,cross}.csv and figures.\n",
        kBackendUsage);
    return 0;
  }
  StudyOptions o;
  o.donor_path = args.require("donor");
  o.receiver_path = args.require("receiver");
  o.labels_path = args.require("labels");
  o.out_dir = args.require("out");
  const int limit = args.get_int("limit", 0);
  check(limit >= 0, ErrorKind::Argument, "--limit must be >= 0");
  o.limit = static_cast<size_t>(limit);
  o.donor_stages = split_list(args.get("donor-stages"), "donor-stages");
  o.receiver_stages = split_list(args.get("receiver-stages"), "receiver-stages");
  const std::string est = args.get("estimator", "biased");
  check(est == "biased" || est == "unbiased", ErrorKind::Argument,
        "--estimator must be biased or unbiased");
  o.estimator = est == "biased" ? CkaEstimator::Biased : CkaEstimator::Unbiased;
  o.adapters.upsample = parse_resize_method(args.get("upsample", "bilinear"));
  o.adapters.downsample = parse_resize_method(args.get("downsample", "area"));
  o.spill_dir = args.get("spill-dir");
  const bool plots = !args.flag("no-plots");
  auto backend = backend_from_args(args);
  args.finish();

  // Made now, to fail before the study's work; removed again if the study fails.
  OutputFolder folder(o.out_dir);
  auto t0 = std::chrono::steady_clock::now();
  StudyResult r = run_study(o, *backend);
  write_study(r, o);
  folder.keep();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("study %s -> %s on %zu images in %.0f s: receiver top-1 %.4f\n", r.donor.c_str(),
              r.receiver.c_str(), r.images, seconds, r.receiver_acc);
  std::printf("%-8s %-12s %10s %10s\n", "metric", "pairs", "pearson r", "spearman");
  for (int same = 1; same >= 0; --same)
    for (const auto& c : same ? r.same_stage : r.cross_stage)
      std::printf("%-8s %-12s %10.3f %10.3f\n", c.metric.c_str(), same ? "same-stage" : "cross-stage",
                  c.pearson, c.spearman);
  if (std::isnan(r.collapse_threshold))
    std::printf("%zu of %zu pairs collapsed (acc < half the unshared): no S threshold separates them\n",
                r.collapsed_pairs, r.pairs.size());
  else
    std::printf("accuracy collapses below S = %.3f (%zu of %zu pairs collapsed; rule right on %.0f%%)\n",
                r.collapse_threshold, r.collapsed_pairs, r.pairs.size(),
                100 * r.collapse_rule_accuracy);
  if (plots) {
    const char* py = std::getenv("REPSHARE_PYTHON");
    std::string python = py ? py : std::string(REPSHARE_SOURCE_DIR) + "/.venv/bin/python";
    const std::string script = std::string(REPSHARE_SOURCE_DIR) + "/scripts/plot_study.py";
    if (run_program({python, script, o.out_dir}, nullptr) != 0)
      std::fprintf(stderr, "study: figures not drawn (needs matplotlib): %s %s %s\n",
                   python.c_str(), script.c_str(), o.out_dir.c_str());
  }
  return 0;
}

}  // namespace repshare
