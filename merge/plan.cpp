#include "merge/plan.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/error.h"
#include "loaders/input_file.h"
#include "merge/sharing.h"

namespace repshare {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

void check_keys(const json& j, const std::set<std::string>& known, const std::string& where) {
  for (auto it = j.begin(); it != j.end(); ++it)
    check(known.count(it.key()) != 0, ErrorKind::Malformed, where, ": unknown key '", it.key(),
          "'");
}

std::string string_field(const json& j, const char* key, const std::string& where) {
  check(j.contains(key), ErrorKind::Malformed, where, ": missing \"", key, "\"");
  check(j[key].is_string() && !j[key].get<std::string>().empty(), ErrorKind::Malformed, where,
        ": \"", key, "\" must be a non-empty string");
  return j[key].get<std::string>();
}

std::string stage_list(const Model& m) {
  std::string s;
  for (const Stage& st : m.info.stages) s += (s.empty() ? "" : ", ") + st.name;
  return s.empty() ? "none: it has no sidecar stage map" : s;
}

}  // namespace

int Plan::index(const std::string& name) const {
  for (size_t i = 0; i < pipelines.size(); ++i)
    if (pipelines[i].name == name) return static_cast<int>(i);
  return -1;
}

bool Plan::any_sharing() const {
  for (const auto& p : pipelines)
    if (p.shares) return true;
  return false;
}

Plan parse_plan(const std::string& text, const std::string& base_dir, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorKind::Malformed, "plan '", origin, "': ", e.what());
  }
  const std::string top = "plan '" + origin + "'";
  check(j.is_object(), ErrorKind::Malformed, top, ": expected an object with \"pipelines\"");
  check_keys(j, {"pipelines", "comment"}, top);
  check(j.contains("pipelines") && j["pipelines"].is_array() && !j["pipelines"].empty(),
        ErrorKind::Malformed, top, ": \"pipelines\" must be a non-empty array");
  Plan plan;
  plan.origin = origin;
  for (size_t i = 0; i < j["pipelines"].size(); ++i) {
    const json& p = j["pipelines"][i];
    const std::string where = top + ", pipeline " + std::to_string(i);
    check(p.is_object(), ErrorKind::Malformed, where, ": expected an object");
    check_keys(p, {"name", "model", "share", "comment"}, where);
    PipelineSpec spec;
    spec.name = string_field(p, "name", where);
    const std::string named = top + ", pipeline '" + spec.name + "'";
    check(plan.index(spec.name) < 0, ErrorKind::Malformed, named, ": the name is used twice");
    const fs::path model = string_field(p, "model", named);
    spec.model = (model.is_absolute() ? model : fs::path(base_dir) / model).lexically_normal()
                     .string();
    if (p.contains("share")) {
      const json& s = p["share"];
      check(s.is_object(), ErrorKind::Malformed, named, ": \"share\" must be an object");
      check_keys(s, {"from", "donor_stage", "receiver_stage", "adapter"}, named + " share");
      spec.shares = true;
      spec.share.from = string_field(s, "from", named + " share");
      spec.share.donor_stage = string_field(s, "donor_stage", named + " share");
      spec.share.receiver_stage = string_field(s, "receiver_stage", named + " share");
      if (s.contains("adapter")) {
        const json& a = s["adapter"];
        check(a.is_object(), ErrorKind::Malformed, named, ": \"adapter\" must be an object");
        check_keys(a, {"upsample", "downsample"}, named + " adapter");
        try {
          if (a.contains("upsample"))
            spec.share.adapter.upsample = parse_resize_method(a["upsample"].get<std::string>());
          if (a.contains("downsample"))
            spec.share.adapter.downsample =
                parse_resize_method(a["downsample"].get<std::string>());
        } catch (const json::exception& e) {
          fail(ErrorKind::Malformed, named, " adapter: ", e.what());
        } catch (const Error& e) {
          fail(ErrorKind::Malformed, named, " adapter: ", e.what());
        }
      }
    }
    plan.pipelines.push_back(spec);
  }
  std::string names;
  for (const auto& p : plan.pipelines) names += (names.empty() ? "" : ", ") + p.name;
  for (const auto& p : plan.pipelines) {
    if (!p.shares) continue;
    const std::string named = top + ", pipeline '" + p.name + "'";
    const int d = plan.index(p.share.from);
    check(d >= 0, ErrorKind::Argument, named, ": shares from '", p.share.from,
          "', which is not a pipeline of the plan (pipelines: ", names, ")");
    check(p.share.from != p.name, ErrorKind::Argument, named, ": shares from itself");
    check(!plan.pipelines[d].shares, ErrorKind::Argument, named, ": shares from '",
          p.share.from, "', which itself shares from '", plan.pipelines[d].share.from,
          "'; a donor must run from the image (chains are not supported)");
  }
  return plan;
}

Plan load_plan(const std::string& path) {
  return parse_plan(read_input_file(path, "plan"), fs::path(path).parent_path().string(), path);
}

Plan plan_for_models(const std::vector<std::string>& model_paths) {
  check(!model_paths.empty(), ErrorKind::Argument, "no models given");
  Plan plan;
  plan.origin = "models given on the command line";
  for (const std::string& path : model_paths) {
    PipelineSpec spec;
    spec.name = fs::path(path).stem().string();
    for (int repeat = 2; plan.index(spec.name) >= 0; ++repeat)
      spec.name = fs::path(path).stem().string() + "_" + std::to_string(repeat);
    spec.model = path;
    plan.pipelines.push_back(spec);
  }
  return plan;
}

Plan without_sharing(Plan plan) {
  for (auto& p : plan.pipelines) p.shares = false;
  return plan;
}

std::vector<std::shared_ptr<const Model>> load_plan_models(const Plan& plan,
                                                           const PassOptions& passes) {
  std::vector<std::shared_ptr<const Model>> models;
  for (const auto& p : plan.pipelines) {
    check(!fs::is_directory(p.model), ErrorKind::Io, "plan '", plan.origin, "', pipeline '", p.name,
          "': model '", p.model, "' is a folder, not a file");
    check(fs::is_regular_file(p.model), ErrorKind::Io, "plan '", plan.origin, "', pipeline '",
          p.name, "': model file '", p.model, "' does not exist");
    models.push_back(std::make_shared<const Model>(load_model(p.model, passes)));
  }
  check_plan_stages(plan, models);
  return models;
}

void check_plan_stages(const Plan& plan, const std::vector<std::shared_ptr<const Model>>& models) {
  check(models.size() == plan.pipelines.size(), ErrorKind::Argument, "plan '", plan.origin,
        "' has ", plan.pipelines.size(), " pipelines but ", models.size(), " models were given");
  for (size_t i = 0; i < plan.pipelines.size(); ++i) {
    const PipelineSpec& p = plan.pipelines[i];
    if (!p.shares) continue;
    const std::string named = "plan '" + plan.origin + "', pipeline '" + p.name + "'";
    const Model& donor = *models[plan.index(p.share.from)];
    const Model& receiver = *models[i];
    const int ds = donor.info.stage_index(p.share.donor_stage);
    const int rs = receiver.info.stage_index(p.share.receiver_stage);
    check(ds >= 0, ErrorKind::Argument, named, ": donor '", p.share.from, "' (model '",
          donor.info.name, "') has no stage '", p.share.donor_stage,
          "' (stages: ", stage_list(donor), ")");
    check(rs >= 0, ErrorKind::Argument, named, ": model '", receiver.info.name,
          "' has no stage '", p.share.receiver_stage, "' (stages: ", stage_list(receiver), ")");
    try {
      links_for_cut(donor, receiver, ds, rs);
    } catch (const Error& e) {
      fail(ErrorKind::Argument, named, ": ", e.what());
    }
  }
}

}  // namespace repshare
