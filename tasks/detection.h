// EfficientDet post-processing: anchors, box decoding, top-k, NMS and soft-NMS,
// replicating effdet 0.4.1 (anchors.py, bench.py, soft_nms.py) so that the engine's
// detections equal DetBenchPredict's on the same network outputs.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/session.h"
#include "engine/tensor.h"
#include "loaders/image.h"

namespace repshare {

// Every post-processing parameter in one place; defaults are effdet's
// tf_efficientdet_d0 config.
struct DetectionConfig {
  int min_level = 3;
  int max_level = 7;
  int num_scales = 3;  // octave scales 2^(i / num_scales)
  // (x, y) size multipliers per anchor shape. effdet 0.4.1's default config (the
  // one tf_efficientdet_d0 uses) lists them as tuples, not as the ratios 1, 2, 0.5
  // of the paper: sqrt(2) would give 1.414 / 0.707 instead of 1.4 / 0.7.
  // Doubles because effdet computes anchors in float64 before rounding to float32.
  std::vector<std::array<double, 2>> aspect_ratios = {{1.0, 1.0}, {1.4, 0.7}, {0.7, 1.4}};
  double anchor_scale = 4.0;
  int image_height = 512;
  int image_width = 512;
  int num_classes = 90;
  int max_detection_points = 5000;  // top-k logits over all levels before NMS
  double iou_threshold = 0.5;  // hard NMS: suppress IoU > threshold (compared in double)
  int max_detections = 100;
  // effdet drops nothing before NMS; its COCO evaluator drops scores < 0.001
  // (to_coco_detections in tasks/coco_eval.h does the same).
  bool soft_nms = false;  // effdet's Gaussian soft-NMS (slow in effdet, not here)
  float soft_nms_sigma = 0.5f;
  float soft_nms_score_threshold = 0.001f;

  int num_levels() const { return max_level - min_level + 1; }
  int anchors_per_location() const {
    return num_scales * static_cast<int>(aspect_ratios.size());
  }
};

// The post-processing parameters a model's sidecar records ("anchors",
// "num_classes", "postprocess"), DetectionConfig's defaults for what it leaves out
// or when there is no sidecar (then the image size is the input's). Throws
// Malformed naming the model for entries of the wrong type or an anchor image size
// unlike the input's.
DetectionConfig detection_config_for(const ModelInfo& info);

// effdet's letterbox preprocessing from the sidecar's "preprocess" entry
// (resize, interpolation, mean, std, fill "mean" = round(255 * mean));
// DetectPreprocess's defaults with the target from the input shape otherwise.
DetectPreprocess detect_preprocess_for(const ModelInfo& info);

// COCO category id of a network class index: effdet's 90 classes are the COCO ids
// 1..90 (with their gaps) shifted by one.
inline int detection_category_id(int class_index) { return class_index + 1; }

// One detection in input (or, with an ImageFrame, original) image pixels.
struct Detection {
  float x_min = 0, y_min = 0, x_max = 0, y_max = 0;
  float score = 0;
  int category_id = 0;
};

// How the network input relates to the original image (effdet's img_info):
// scale = original pixels per input pixel; width/height = original image size.
// Boxes are clipped to the scaled image inside the input, then multiplied by scale.
struct ImageFrame {
  float scale = 1.0f;
  float width = 0, height = 0;
};

// The img_info effdet gives its post-processing for a letterboxed image:
// img_scale = 1 / letterbox scale (computed in double, stored in float32 as
// effdet's tensor does) and the original size.
ImageFrame image_frame(const Letterbox& box);

// Feature map (height, width) per level min_level..max_level: each level halves
// the previous one rounding up, as effdet's get_feat_sizes.
std::vector<std::array<int, 2>> feature_sizes(const DetectionConfig& config);

// Anchors [num_anchors][ymin, xmin, ymax, xmax] in input pixels, ordered by level,
// then row, column, then octave scale and aspect ratio (effdet's Anchors.boxes).
std::vector<std::array<float, 4>> generate_anchors(const DetectionConfig& config);

// Candidates selected for NMS, on the host: boxes [x_min, y_min, x_max, y_max],
// scores after the sigmoid and class indices (0-based), best first.
struct DetectionCandidates {
  std::vector<std::array<float, 4>> boxes;
  std::vector<float> scores;
  std::vector<int> classes;
};

// effdet's batched Gaussian soft-NMS: repeatedly keeps the highest score and
// multiplies every other score by exp(-IoU^2 / sigma), dropping those that fall
// to score_threshold or below. Classes are separated as effdet does, by offsetting
// boxes per class. Returns kept indices in keep order and their decayed scores.
// On the host: it is sequential, and optional.
struct SoftNmsResult {
  std::vector<int> indices;
  std::vector<float> scores;
};
SoftNmsResult batched_soft_nms(const DetectionCandidates& c, float sigma, float score_threshold);

// Network outputs to detections on one backend: top-k, box decoding and hard NMS
// run where the outputs are (Backend::detection_select and nms), so a GPU hands
// back the keep list and D0's 5,000 candidates (boxes, scores, classes: 140 KB)
// instead of its 18 MB of logits. Its buffers (anchors, candidates, keep list,
// workspaces) are allocated once, here.
class DetectionPostprocess {
 public:
  DetectionPostprocess(DetectionConfig config, Backend& backend);
  ~DetectionPostprocess();
  DetectionPostprocess(const DetectionPostprocess&) = delete;
  DetectionPostprocess& operator=(const DetectionPostprocess&) = delete;

  const DetectionConfig& config() const { return config_; }
  const std::vector<std::array<float, 4>>& anchors() const { return anchors_; }
  // Backend memory of the buffers above.
  size_t backend_bytes() const { return buffer_bytes_; }
  // Whether run()'s backend work is recorded for the last outputs and frame it had
  // (see recorded_ below).
  bool recorded() const { return recorded_ && recorded_for_ == last_run_; }

  // class_outputs[l]: [1, A*num_classes, H_l, W_l], box_outputs[l]: [1, A*4, H_l, W_l],
  // float32 in the backend's memory, levels min_level..max_level in order.
  // Reproduces effdet's _post_process (top-k over all logits) and
  // generate_detections. Returns at most max_detections, best first (effdet pads
  // to max_detections with zero rows).
  std::vector<Detection> run(const std::vector<Tensor>& class_outputs,
                             const std::vector<Tensor>& box_outputs,
                             const ImageFrame* frame = nullptr);

  // The top-k step alone: decoded candidates for NMS, copied to the host.
  DetectionCandidates select_candidates(const std::vector<Tensor>& class_outputs,
                                        const std::vector<Tensor>& box_outputs,
                                        const ImageFrame* frame);

 private:
  void check_outputs(const std::vector<Tensor>& outputs, int64_t per_anchor,
                     const char* what) const;
  // Checks the outputs and the frame; the select's parameters for them.
  DetectionSelectParams select_params(const std::vector<Tensor>& class_outputs,
                                      const std::vector<Tensor>& box_outputs,
                                      const ImageFrame* frame) const;
  // Queues detection_select into the candidate buffers.
  void select(const DetectionSelectParams& p, const std::vector<Tensor>& class_outputs,
              const std::vector<Tensor>& box_outputs);
  // Queues hard NMS's backend work for them: select, nms, and the downloads of the
  // keep list and the candidates (waited for by the caller).
  void queue_hard_nms(const DetectionSelectParams& p, const std::vector<Tensor>& class_outputs,
                      const std::vector<Tensor>& box_outputs);
  // Copies the candidate buffers into the host_* arrays below: queued, and waited for.
  void queue_candidate_downloads();
  void download_candidates();
  // The downloaded candidates up to the first empty row (class -1).
  DetectionCandidates host_candidates() const;

  DetectionConfig config_;
  Backend& backend_;
  std::vector<std::array<int, 2>> feature_sizes_;
  std::vector<std::array<float, 4>> anchors_;
  DetectionSelectParams select_params_;
  NmsParams nms_params_;
  // Backend buffers: one allocation, carved into the tensors and workspaces.
  void* buffer_ = nullptr;
  size_t buffer_bytes_ = 0;
  Tensor anchors_t_, boxes_t_, scores_t_, classes_t_, keep_t_;
  void* select_workspace_ = nullptr;
  void* nms_workspace_ = nullptr;
  // Host copies of the candidates and the keep list, sized once (Backend::alloc_host:
  // pinned on CUDA, so they are downloaded with one wait).
  HostArray<float> host_boxes_, host_scores_;
  HostArray<int64_t> host_classes_, host_keep_;
  // queue_hard_nms recorded (CUDA: one graph launch for its 13 launches and 4
  // copies), for the outputs and select parameters in `recorded_for_`: a video's
  // frames share them. The first run with new ones goes call by call (kernels load
  // lazily, which a capture must not contain), the next tries to record, once.
  struct RecordingKey {
    std::array<const void*, 2 * kMaxDetectionLevels> outputs{};  // class, then box
    bool clip = false;
    float clip_w = 0, clip_h = 0;
    bool operator==(const RecordingKey& o) const {
      return outputs == o.outputs && clip == o.clip && clip_w == o.clip_w && clip_h == o.clip_h;
    }
  };
  RecordingKey last_run_, recorded_for_;
  std::unique_ptr<RecordedWork> recorded_;
};

// The post-processing end of a detection model: which outputs hold each level's
// class logits and box regressions (the sidecar's "class_outputs"/"box_outputs",
// class_pN/box_pN for a model without them) and the DetectionPostprocess that
// turns them into detections.
class DetectionHead {
 public:
  // Throws Argument naming the model and the missing output when the model lacks
  // a class or box output per level (it is not an EfficientDet).
  DetectionHead(const ModelInfo& info, DetectionConfig config, Backend& backend);

  DetectionPostprocess& postprocess() { return postprocess_; }
  // Class outputs then box outputs, level order: the tensors a network must keep.
  std::vector<std::string> outputs() const;
  // Detections from those outputs of the network's last run, where it left them.
  std::vector<Detection> run(const Executor& network, const ImageFrame* frame);

 private:
  std::vector<std::string> class_outputs_, box_outputs_;
  DetectionPostprocess postprocess_;
};

// A detection model on a backend, image in, detections out: the sidecar's
// letterbox, the network and the head.
//   Model m = load_model("d0.onnx");
//   Detector d(m, backend, detection_config_for(m.info));
//   for (const Detection& det : d.detect(load_image("x.jpg"))) ...
class Detector {
 public:
  Detector(const Model& model, Backend& backend, DetectionConfig config);

  // Letterboxes img into the network input, runs the network and post-processes:
  // boxes in img's pixels, best first. Throws Malformed for an empty image.
  std::vector<Detection> detect(const Image& img);

  // The halves of detect(), for timing them apart.
  Session& session() { return session_; }
  DetectionHead& head() { return head_; }

 private:
  DetectionHead head_;
  DetectPreprocess preprocess_;
  Session session_;
  Preprocessor preprocessor_;
};

}  // namespace repshare
