// Helpers for tests on whole exported models (scripts/make_parity_models.sh and
// scripts/fetch_models.sh write them to models/, or $REPSHARE_MODELS): where a
// model is, and how far apart two runs of it are.
#pragma once

#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/model.h"

namespace repshare {

// MODELS: $REPSHARE_MODELS, else the checkout's models/ (NAME.onnx, NAME.json and
// parity/NAME/ with PyTorch's reference outputs).
inline std::string models_dir() {
  const char* dir = std::getenv("REPSHARE_MODELS");
  return dir ? dir : std::string(REPSHARE_SOURCE_DIR) + "/models";
}

// MODELS/name.onnx, or "" when it is not there (the test then skips).
inline std::string exported_model(const std::string& name) {
  std::string p = models_dir() + "/" + name + ".onnx";
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 ? p : "";
}

// Every stage output of the model's stage map, then its task outputs.
inline std::vector<std::string> stage_and_task_outputs(const Model& m) {
  std::vector<std::string> names;
  for (const auto& s : m.info.stages) names.push_back(s.tensor);
  for (const auto& o : m.info.outputs) names.push_back(o);
  return names;
}

// ||got - want|| / ||want|| over n values (the plain norm of got when want is 0).
inline double normalized_error(const float* want, const float* got, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(want[i]) - got[i]) * (double(want[i]) - got[i]);
    den += double(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace repshare
