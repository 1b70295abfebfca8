// Sharing plan: which models run over each frame and which of them take a stage
// representation from another instead of computing their own front. A plan file:
//
//   {"pipelines": [
//     {"name": "det", "model": "../../models/tf_efficientdet_d0_rand0.onnx"},
//     {"name": "cls", "model": "../../models/lite0.onnx",
//      "share": {"from": "det", "donor_stage": "stage4", "receiver_stage": "stage4",
//                "adapter": {"upsample": "bilinear", "downsample": "area"}}}]}
//
// Model paths are relative to the plan file. A receiver ("share") runs from its
// receiver_stage on the donor pipeline's adapted donor_stage output; a donor must
// itself run from the image (no chains), so every frame runs each front once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/model.h"
#include "merge/adapter.h"

namespace repshare {

struct ShareSpec {
  std::string from;            // donor pipeline name
  std::string donor_stage;     // stage name in the donor's model
  std::string receiver_stage;  // stage name in this pipeline's model
  AdapterOptions adapter;
};

struct PipelineSpec {
  std::string name;
  std::string model;  // path (resolved against the plan's folder)
  bool shares = false;
  ShareSpec share;    // meaningful when shares
};

struct Plan {
  std::string origin;  // the plan file, or a description, for messages
  std::vector<PipelineSpec> pipelines;

  int index(const std::string& name) const;  // -1 when absent
  bool any_sharing() const;
};

// Parses plan JSON. Relative model paths are taken relative to base_dir. Checks
// the structure: unique non-empty names, known keys, a "from" naming an earlier
// or later pipeline that runs from the image (not itself a receiver and not the
// pipeline itself), adapter methods. Errors (Malformed/Argument) name `origin`
// and the pipeline.
Plan parse_plan(const std::string& text, const std::string& base_dir, const std::string& origin);
// Reads and parses a plan file; Io naming the path when it cannot be read.
Plan load_plan(const std::string& path);
// One pipeline per model, nothing shared, named after the model files' stems
// ("lite0", "lite0_2" for a repeat).
Plan plan_for_models(const std::vector<std::string>& model_paths);
// The plan with every "share" entry removed: each model runs in full.
Plan without_sharing(Plan plan);

// Loads each pipeline's model (Io naming the pipeline and path when the file is
// missing) and checks every share against them: the stages exist (the message
// lists the model's stages), and the cut is one the receiver can run from
// (links_for_cut). Models come back in plan order, prepared with `passes`
// (pass_options_for the backend that runs them).
std::vector<std::shared_ptr<const Model>> load_plan_models(
    const Plan& plan, const PassOptions& passes = PassOptions());
void check_plan_stages(const Plan& plan, const std::vector<std::shared_ptr<const Model>>& models);

}  // namespace repshare
