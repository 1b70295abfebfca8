// Runs one ONNX test case directory (ONNX's node-test layout: model.onnx and
// test_data_set_0/{input_N,output_N}.pb) through the engine on a backend and
// compares with the stored outputs. Shared by the official node tests and the
// repo's own fixtures (tests/fixtures/<case>/).
#pragma once

#include <string>

#include "engine/backend.h"
#include "engine/passes.h"

namespace repshare {

struct CaseResult {
  enum class Status { Passed, Failed, Skipped } status = Status::Skipped;
  std::string reason;        // why skipped or failed
  double max_abs_diff = 0;   // over all outputs
  bool constant_operands = false;  // ran with inputs 1.. bound as constants
};

// rtol/atol: |got - want| <= atol + rtol * |want| elementwise.
CaseResult run_onnx_case(const std::string& dir, Backend& backend, const PassOptions& passes,
                         double rtol, double atol);

}  // namespace repshare
