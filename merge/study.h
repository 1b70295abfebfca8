// The sharing study: for a donor and a receiver model run on the same labelled
// images, every (donor stage i, receiver stage j) pair's CKA similarity S and
// merged accuracy Acc, with the receiver-side cost metrics, and how well each
// metric predicts Acc (Pearson and Spearman r, same-stage and cross-stage).
//
// Computation is shared: each image is decoded once; the donor and the receiver
// each run once per image (all their stage outputs at once); each pair's receiver
// suffix runs once per image on the donor's adapted stage output. Stage outputs
// stream into per-stage Gram accumulators, so CKA needs no second pass.
//
// Metric definitions (docs/metrics.md):
//   S      linear CKA between donor stage i's and receiver stage j's outputs on the
//          N images (biased estimator by default, the paper's Eq. 1; the other is
//          reported too)
//   Acc    receiver top-1 when it runs from stage j+1 on donor stage i's adapted
//          output
//   FLOPs  2 x MACs of the receiver's stages up to j: the compute sharing skips
//   Params parameters of the receiver's stages up to j: the weights never loaded
//   Size   elements of donor stage i's output per image (C x H x W): what is shared
#pragma once

#include <string>
#include <vector>

#include "engine/backend.h"
#include "merge/adapter.h"
#include "merge/cka.h"

namespace repshare {

struct StudyOptions {
  std::string donor_path, receiver_path, labels_path, out_dir;
  std::vector<std::string> donor_stages, receiver_stages;  // empty: common stage names
  size_t limit = 0;                                        // 0: all images
  CkaEstimator estimator = CkaEstimator::Biased;
  AdapterOptions adapters;
  std::string spill_dir;  // Gram spill files (default $TMPDIR)
};

struct StudyPair {
  std::string donor_stage, receiver_stage;
  int i = 0, j = 0;
  double s = 0, s_other = 0;  // chosen and the other estimator
  double acc = 0;
  int64_t flops = 0, params = 0, size = 0;
};

struct Correlation {
  std::string metric;
  double pearson = 0, spearman = 0;
};

struct StudyResult {
  std::string donor, receiver;
  size_t images = 0;
  double receiver_acc = 0, donor_acc = -1;  // unshared top-1 (donor: when a classifier)
  std::vector<std::string> donor_stages, receiver_stages;  // rows/columns of the matrices
  std::vector<StudyPair> pairs;
  std::vector<std::vector<double>> s_donor, s_receiver, s_cross;  // CKA matrices
  std::vector<Correlation> same_stage, cross_stage;
  size_t collapsed_pairs = 0;
  // S below which Acc collapses (see study.cpp); NaN when all or no pairs collapse.
  double collapse_threshold = 0;
  double collapse_rule_accuracy = 0;
};

StudyResult run_study(const StudyOptions& options, Backend& backend);

// Writes pairs.csv, summary.json and the CKA matrices (cka_*.csv) into out_dir.
void write_study(const StudyResult& r, const StudyOptions& options);

double pearson(const std::vector<double>& x, const std::vector<double>& y);
double spearman(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace repshare
