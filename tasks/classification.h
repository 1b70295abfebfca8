// Classification task helpers: the preprocessing a model's sidecar records, and
// top-k over logits.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "loaders/image.h"

namespace repshare {

// The sidecar's "preprocess" entry (resize, crop, interpolation, mean, std); the
// torchvision ImageNet defaults (256 / 224 bicubic) for a model without one, with
// the crop taken from the model's input shape.
ClassifyPreprocess classify_preprocess_for(const ModelInfo& info);

// A preprocess entry's size `key` ("resize", "crop"): a whole number, or def where
// the entry has none. Throws Malformed naming the model and the key.
int read_size(const nlohmann::json& preprocess, const char* key, const ModelInfo& info, int def);

// A preprocess entry's "mean" and "std" into mean and std where it has them: three
// finite numbers each, std positive (each channel is divided by it). Throws
// Malformed naming the model. Shared by the classification and detection entries.
void read_normalisation(const nlohmann::json& preprocess, const ModelInfo& info, float mean[3],
                        float std[3]);

// Indices of the k largest values, largest first (ties: lower index first).
std::vector<int> top_k(const float* values, int count, int k);

// Softmax probabilities of the top-k entries, as (index, probability).
std::vector<std::pair<int, float>> top_k_softmax(const float* logits, int count, int k);

}  // namespace repshare
