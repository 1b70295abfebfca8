#include "tasks/classification.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "engine/error.h"

namespace repshare {

int read_size(const nlohmann::json& preprocess, const char* key, const ModelInfo& info, int def) {
  if (!preprocess.contains(key)) return def;
  const nlohmann::json& v = preprocess[key];
  check(v.is_number_integer(), ErrorKind::Malformed, "preprocess entry of model '", info.name,
        "' (", info.sidecar, "): ", key, " must be a whole number, not ", v.dump());
  return v.get<int>();
}

void read_normalisation(const nlohmann::json& preprocess, const ModelInfo& info, float mean[3],
                        float std[3]) {
  for (const char* key : {"mean", "std"}) {
    if (!preprocess.contains(key)) continue;
    const nlohmann::json& v = preprocess[key];
    check(v.is_array() && v.size() == 3, ErrorKind::Malformed, "preprocess entry of model '",
          info.name, "': ", key, " must be three numbers, one per channel, not ", v.dump());
    float* out = key[0] == 'm' ? mean : std;
    for (int c = 0; c < 3; ++c) {
      check(v[c].is_number(), ErrorKind::Malformed, "preprocess entry of model '", info.name,
            "': ", key, " ", v.dump(), " holds a value that is not a number");
      out[c] = v[c].get<float>();
      check(std::isfinite(out[c]) && (out == mean || out[c] > 0), ErrorKind::Malformed,
            "preprocess entry of model '", info.name, "': ", key, " ", v.dump(),
            out == mean ? " is not finite" : " must be positive (each channel is divided by it)");
    }
  }
}

ClassifyPreprocess classify_preprocess_for(const ModelInfo& info) {
  ClassifyPreprocess p;
  if (info.input_shape.rank() == 4) {
    p.crop = static_cast<int>(info.input_shape[3]);
    p.resize = static_cast<int>(std::lround(p.crop / 0.875));
  }
  if (info.sidecar_json.empty()) return p;
  try {
    auto j = nlohmann::json::parse(info.sidecar_json);
    if (!j.contains("preprocess")) return p;
    const auto& pp = j["preprocess"];
    p.resize = read_size(pp, "resize", info, p.resize);
    p.crop = read_size(pp, "crop", info, p.crop);
    if (pp.contains("interpolation")) p.interp = parse_interp(pp["interpolation"].get<std::string>());
    read_normalisation(pp, info, p.mean, p.std);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Malformed, "preprocess entry of model '", info.name, "': ", e.what());
  }
  check(p.crop > 0 && p.resize >= p.crop, ErrorKind::Malformed, "model '", info.name,
        "': preprocess resize ", p.resize, " / crop ", p.crop, " is not usable");
  return p;
}

std::vector<int> top_k(const float* values, int count, int k) {
  k = std::min(k, count);
  std::vector<int> idx(count);
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  idx.resize(k);
  return idx;
}

std::vector<std::pair<int, float>> top_k_softmax(const float* logits, int count, int k) {
  double mx = -INFINITY, sum = 0;
  for (int i = 0; i < count; ++i) mx = std::max<double>(mx, logits[i]);
  for (int i = 0; i < count; ++i) sum += std::exp(logits[i] - mx);
  std::vector<std::pair<int, float>> out;
  for (int i : top_k(logits, count, k))
    out.push_back({i, static_cast<float>(std::exp(logits[i] - mx) / sum)});
  return out;
}

}  // namespace repshare
