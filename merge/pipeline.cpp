#include "merge/pipeline.h"

#include <chrono>
#include <set>

#include "engine/analysis.h"
#include "engine/error.h"
#include "tasks/classification.h"

namespace repshare {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

size_t float_bytes(const Shape& s) { return static_cast<size_t>(s.numel()) * sizeof(float); }

}  // namespace

struct Pipelines::Pipe {
  std::string name;
  const Model* model = nullptr;
  bool detection = false;
  WeightsArena* arena = nullptr;
  // Receiver: the donor pipe and the cut. Donor (or standalone): the stages of its
  // own model that receivers read, kept alive in its arena to the end of a run.
  int donor = -1;
  int donor_stage = -1, receiver_stage = -1;
  AdapterOptions adapter;
  std::set<int> kept_stages;
  std::unique_ptr<Executor> full;
  std::unique_ptr<ReceiverSuffix> suffix;
  // Task outputs kept after each run; a classifier's are downloaded, a detector's
  // are post-processed where they are (DetectionHead).
  std::vector<std::string> outputs;
  std::vector<Shape> output_shapes;
  std::vector<HostArray<float>> host_outputs;  // Backend::alloc_host: pinned on CUDA
  HostArray<float> host_input;
  ClassifyPreprocess classify_pre;
  DetectPreprocess detect_pre;
  std::unique_ptr<DetectionHead> head;
  Preprocessor preprocessor;
  ImageFrame frame;  // a detector's last letterbox, for its and its receivers' boxes

  const Executor& network() const { return suffix ? suffix->receiver() : *full; }
  // The outputs its network keeps in the backend's float storage: a detector's,
  // which its DetectionHead reads where they are. A classifier's are downloaded.
  std::vector<std::string> outputs_in_storage() const {
    return detection ? outputs : std::vector<std::string>();
  }
  const Tensor& output(const std::string& n) const {
    return suffix ? suffix->output(n) : full->output(n);
  }
};

Pipelines::Pipelines(const Plan& plan, std::vector<std::shared_ptr<const Model>> models,
                     Backend& backend, bool share, int top_k)
    : backend_(backend), share_(share), top_k_(top_k), models_(std::move(models)) {
  check_plan_stages(plan, models_);
  check(top_k_ > 0, ErrorKind::Argument, "top-k must be positive");
  const size_t n = plan.pipelines.size();
  arenas_.emplace_back(new WeightsArena(backend));
  // Without sharing each model gets its own arena: one arena would store tensors
  // that happen to be identical across models once, which is sharing too.
  while (!share_ && arenas_.size() < n) arenas_.emplace_back(new WeightsArena(backend));

  for (size_t i = 0; i < n; ++i) {
    const PipelineSpec& spec = plan.pipelines[i];
    std::unique_ptr<Pipe> p(new Pipe);
    p->name = spec.name;
    p->model = models_[i].get();
    p->arena = arenas_[share_ ? 0 : i].get();
    const ModelInfo& info = p->model->info;
    const std::string where = "pipeline '" + spec.name + "' (model '" + info.name + "')";
    if (info.task == "detection") {
      p->detection = true;
      p->head.reset(new DetectionHead(info, detection_config_for(info), backend_));
      p->outputs = p->head->outputs();
      p->detect_pre = detect_preprocess_for(info);
    } else if (info.task == "classification") {
      check(info.outputs.size() == 1, ErrorKind::Argument, where, ": a classifier needs one ",
            "logits output; the model has ", info.outputs.size(), missing_sidecar_note(info));
      p->outputs = info.outputs;
      p->classify_pre = classify_preprocess_for(info);
    } else {
      fail(ErrorKind::Unsupported, where, ": task '", info.task,
           "' (run needs \"classification\" or \"detection\" in the model's sidecar)",
           missing_sidecar_note(info));
    }
    for (const std::string& o : p->outputs)
      p->output_shapes.push_back(p->model->graph.values[p->model->graph.find(o)].shape);
    if (share_ && spec.shares) {
      p->donor = plan.index(spec.share.from);
      p->donor_stage = models_[p->donor]->info.stage_index(spec.share.donor_stage);
      p->receiver_stage = info.stage_index(spec.share.receiver_stage);
      p->adapter = spec.share.adapter;
    }
    pipes_.push_back(std::move(p));
  }
  for (const auto& p : pipes_) {
    if (p->donor < 0) continue;
    for (const StageLink& l : links_for_cut(*models_[p->donor], *p->model, p->donor_stage,
                                            p->receiver_stage))
      pipes_[p->donor]->kept_stages.insert(l.donor_stage);
  }
  // Fronts first so that a weight identical in a donor and a receiver is owned by
  // the donor, which computes from the image either way.
  for (const auto& p : pipes_) {
    if (p->donor >= 0) continue;
    // Receivers' adapters read the kept stages, and a detector's head its outputs,
    // where they are, in the backend's storage; run_front uploads every frame.
    std::vector<std::string> wanted = p->outputs, in_storage = p->outputs_in_storage();
    for (int s : p->kept_stages) {
      wanted.push_back(p->model->info.stages[s].tensor);
      in_storage.push_back(p->model->info.stages[s].tensor);
    }
    p->full.reset(new Executor(p->model->graph, backend_, *p->arena, {p->model->info.input}, wanted,
                               Executor::Inputs::EachRun, in_storage));
  }
  for (const auto& p : pipes_) {
    if (p->donor < 0) continue;
    const SuffixStorage storage{/*donor_stages=*/true, p->outputs_in_storage()};
    p->suffix.reset(new ReceiverSuffix(*models_[p->donor], *p->model, p->donor_stage,
                                       p->receiver_stage, p->adapter, backend_, *p->arena,
                                       p->outputs, storage));
  }
}

Pipelines::~Pipelines() = default;

void Pipelines::check_class_names(size_t names) const {
  for (const auto& p : pipes_) {
    if (names == 0 || p->detection) continue;
    const int64_t classes = p->output_shapes[0].numel();
    check(static_cast<int64_t>(names) == classes, ErrorKind::Argument, "labels file has ", names,
          " names; pipeline '", p->name, "' (model '", p->model->info.name, "') has ", classes,
          " classes");
  }
}

void Pipelines::allocate() {
  check(!allocated_, ErrorKind::Argument, "pipelines allocated twice");
  allocated_ = true;
  for (auto& a : arenas_) a->commit();
  for (auto& p : pipes_) {
    if (p->donor >= 0) continue;
    p->full->allocate();
    p->host_input = HostArray<float>(backend_, p->full->input(p->model->info.input).numel());
  }
  for (auto& p : pipes_) {
    if (p->donor >= 0) {
      const Pipe& d = *pipes_[p->donor];
      std::vector<const Tensor*> stage_outputs(d.model->info.stages.size(), nullptr);
      for (int s : d.kept_stages) stage_outputs[s] = &d.full->output(d.model->info.stages[s].tensor);
      p->suffix->allocate(stage_outputs);
    }
    if (!p->detection)
      for (const Shape& s : p->output_shapes) p->host_outputs.emplace_back(backend_, s.numel());
  }
}

void Pipelines::run_front(Pipe& p, const Image& img, PipelineResult& r) {
  const auto t0 = Clock::now();
  if (p.detection)
    p.frame = image_frame(p.preprocessor.detect(img, p.detect_pre, p.host_input.data()));
  else
    p.preprocessor.classify(img, p.classify_pre, p.host_input.data());
  Tensor& in = p.full->input(p.model->info.input);
  backend_.upload(in.data, p.host_input.data(), p.host_input.bytes());
  p.full->run();
  finish(p, r);
  r.seconds = seconds_since(t0);
}

void Pipelines::run_suffix(Pipe& p, PipelineResult& r) {
  const auto t0 = Clock::now();
  p.suffix->run();
  finish(p, r);
  r.seconds = seconds_since(t0);
}

void Pipelines::finish(Pipe& p, PipelineResult& r) {
  r.name = p.name;
  if (!p.detection) {
    for (size_t o = 0; o < p.outputs.size(); ++o)
      backend_.download_queued(p.host_outputs[o].data(), p.output(p.outputs[o]).data,
                               p.host_outputs[o].bytes());
    backend_.synchronize();
    r.task = "classification";
    r.classes = top_k_softmax(p.host_outputs[0].data(),
                              static_cast<int>(p.host_outputs[0].size()), top_k_);
    return;
  }
  r.task = "detection";
  // A receiving detector reports boxes in the image's pixels when its donor
  // letterboxed the image; after a classifier's crop there is no such frame.
  const Pipe& framer = p.donor >= 0 ? *pipes_[p.donor] : p;
  const ImageFrame* frame = framer.detection ? &framer.frame : nullptr;
  r.detections = p.head->run(p.network(), frame);
}

std::vector<PipelineResult> Pipelines::run(const Image& img) {
  check(allocated_, ErrorKind::Argument, "pipelines run before allocate()");
  check(img.width > 0 && img.height > 0, ErrorKind::Malformed, "image of size ", img.width, "x",
        img.height, " has no pixels");
  std::vector<PipelineResult> results(pipes_.size());
  for (size_t i = 0; i < pipes_.size(); ++i) {
    if (pipes_[i]->donor >= 0) continue;
    run_front(*pipes_[i], img, results[i]);
    for (size_t j = 0; j < pipes_.size(); ++j)
      if (pipes_[j]->donor == static_cast<int>(i)) run_suffix(*pipes_[j], results[j]);
  }
  return results;
}

MemoryReport Pipelines::memory() const {
  MemoryReport report;
  report.label = share_ ? "merged" : "separate";
  report.backend = backend_.name();
  report.overhead = backend_.overhead();
  for (const auto& a : arenas_) report.weights += a->total_bytes();
  // Each record is counted once: for the first pipeline whose model owns it
  // (adapter graphs' constants count for their receiver).
  std::set<const WeightRecord*> claimed;
  for (const auto& p : pipes_) {
    PipelineMemory m;
    m.name = p->name;
    m.model = p->model->info.name;
    const std::string graph = p->model->graph.name;
    if (p->donor >= 0)
      m.shares_from = pipes_[p->donor]->name + "/" +
                      models_[p->donor]->info.stages[p->donor_stage].name + " -> " +
                      p->model->info.stages[p->receiver_stage].name;
    for (const WeightRecord& r : p->arena->records()) {
      const bool adapter_of_this = r.model.rfind("adapter:", 0) == 0 &&
                                   r.model.find("->" + graph + "/") != std::string::npos;
      bool used = false;
      for (const std::string& u : r.users) used = used || u.rfind(graph + "/", 0) == 0;
      if ((r.model == graph || adapter_of_this) && claimed.insert(&r).second)
        m.weights_owned += r.bytes;
      else if (used || adapter_of_this)
        m.weights_borrowed += r.bytes;
    }
    const ModelAnalysis analysis = analyze(*p->model);
    for (size_t s = 0; s < analysis.stages.size(); ++s)
      m.stages.push_back({analysis.stages[s].name,
                          static_cast<size_t>(analysis.stages[s].params) *
                              dtype_size(backend_.float_storage()),
                          p->donor < 0 || static_cast<int>(s) > p->receiver_stage});
    const Executor& net = p->network();
    m.arenas.push_back({p->suffix ? p->name + " suffix" : p->name, net.activation_bytes(),
                        net.activation_lower_bound(), net.largest_workspace()});
    if (p->suffix) {
      // ReceiverSuffix reports its adapters' arenas only as a sum with the suffix's;
      // their liveness bound is not exposed, so it is taken as their size.
      const size_t adapters = p->suffix->activation_bytes() - net.activation_bytes();
      m.arenas.push_back({p->name + " adapters", adapters, adapters, 0});
    }
    if (p->head) {
      const size_t post = p->head->postprocess().backend_bytes();
      m.arenas.push_back({p->name + " detection post-processing", post, post, 0});
    }
    if (!p->suffix) m.host_buffers += float_bytes(p->model->info.input_shape);
    if (!p->detection)
      for (const Shape& s : p->output_shapes) m.host_buffers += float_bytes(s);
    report.pipelines.push_back(m);
  }
  return report;
}

MeasuredMemory measure_memory(const Plan& plan, std::vector<std::shared_ptr<const Model>> models,
                              Backend& backend, bool share, const Image& frame) {
  MeasuredMemory m;
  release_free_heap();
  const size_t before = resident_bytes();
  // Device memory from before the pipelines exist: detection heads allocate their
  // post-processing buffers as they are built, and the report counts them.
  const size_t before_device = backend.device_bytes_in_use();
  auto overhead_bytes = [&backend] {
    size_t bytes = 0;
    for (const BackendMemoryItem& o : backend.overhead()) bytes += o.bytes;
    return bytes;
  };
  const size_t before_overhead = overhead_bytes();
  Pipelines p(plan, std::move(models), backend, share);
  backend.synchronize();
  const size_t built = resident_bytes();
  p.allocate();
  p.run(frame);
  backend.synchronize();
  const size_t ran = resident_bytes();
  const size_t ran_device = backend.device_bytes_in_use();
  m.reported = p.memory();
  m.construction_rss = built - before;
  m.allocate_and_run_rss = ran - built;
  m.allocate_and_run_device = ran_device > before_device ? ran_device - before_device : 0;
  const size_t after_overhead = overhead_bytes();
  m.overhead_grown = after_overhead > before_overhead ? after_overhead - before_overhead : 0;
  return m;
}

}  // namespace repshare
