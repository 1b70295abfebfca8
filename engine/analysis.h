// Static analysis of a prepared model: FLOPs and parameters per node and per
// stage, and the single-tensor cut points of the graph. Used by `repshare
// inspect`, the memory reporter and the sharing study.
//
// Definitions (docs/metrics.md):
//   FLOPs  = 2 x multiply-accumulates of Conv, Gemm and MatMul nodes (the
//            convention of the EfficientNet paper's "FLOPs" ~ 0.39 G MACs for B0 is
//            MACs; we report FLOPs = 2 MACs and say so); other ops are not counted.
//   params = elements of the constant tensors a node reads (weights, biases,
//            folded BatchNorm), each tensor counted once.
#pragma once

#include <string>
#include <vector>

#include "engine/model.h"

namespace repshare {

struct StageStats {
  std::string name;    // stage name, or "output" for what follows the last stage
  std::string tensor;  // its output tensor ("" for "output")
  Shape shape;
  int nodes = 0;
  int64_t flops = 0;
  int64_t params = 0;
};

struct CutPoint {
  std::string tensor;
  Shape shape;
  int64_t flops_before = 0;  // FLOPs of the nodes that compute it
};

struct ModelAnalysis {
  std::vector<int64_t> node_flops;  // per graph node
  int64_t total_flops = 0;
  int64_t total_params = 0;
  std::vector<StageStats> stages;  // the model's stages in order, then "output"
  std::vector<CutPoint> cut_points;
};

ModelAnalysis analyze(const Model& m);

// FLOPs (2 x MACs) of one node, from the graph's inferred shapes; 0 for ops that
// are not Conv/Gemm/MatMul.
int64_t node_flops(const Graph& g, const Node& n);

}  // namespace repshare
