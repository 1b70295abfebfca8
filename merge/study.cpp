#include "merge/study.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "apps/app_util.h"
#include "engine/analysis.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "loaders/image.h"
#include "loaders/labels.h"
#include "loaders/output_file.h"
#include "merge/sharing.h"
#include "tasks/classification.h"

namespace repshare {

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 2) return NAN;
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  // A constant series (all pairs at one accuracy) has no correlation: report NaN
  // rather than rounding noise divided by rounding noise.
  const double tiny = 1e-12;
  if (sxx <= tiny * (1 + mx * mx) * n || syy <= tiny * (1 + my * my) * n) return NAN;
  return sxy / std::sqrt(sxx * syy);
}

namespace {

std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) r[order[k]] = 0.5 * (i + j);  // ties share their mean rank
    i = j + 1;
  }
  return r;
}

int argmax(const float* v, int64_t n) {
  return static_cast<int>(std::max_element(v, v + n) - v);
}

std::vector<int> select_stages(const ModelInfo& m, const ModelInfo& other,
                               const std::vector<std::string>& names) {
  std::vector<int> out;
  if (names.empty()) {
    for (int i = 0; i < static_cast<int>(m.stages.size()); ++i)
      if (other.stage_index(m.stages[i].name) >= 0) out.push_back(i);
    check(!out.empty(), ErrorKind::Argument, "models '", m.name, "' and '", other.name,
          "' share no stage names; pass --donor-stages and --receiver-stages",
          missing_sidecar_note(m), missing_sidecar_note(other));
  } else {
    for (const auto& n : names) {
      m.stage(n);  // throws naming the model and its stages
      out.push_back(m.stage_index(n));
    }
  }
  return out;
}

// Downloads a tensor into a host buffer of the right size (a copy on the CPU).
void fetch(Backend& be, const Tensor& t, std::vector<float>& host) {
  host.resize(t.numel());
  be.download(host.data(), t.data, host.size() * sizeof(float));
}

}  // namespace

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  return pearson(ranks(x), ranks(y));
}

StudyResult run_study(const StudyOptions& o, Backend& be) {
  const PassOptions passes = pass_options_for(be);
  Model donor = load_model(o.donor_path, passes), receiver = load_model(o.receiver_path, passes);
  check(receiver.info.outputs.size() == 1, ErrorKind::Argument, "receiver '",
        receiver.info.name, "' must be a classifier with one logits output");
  const std::vector<int> dsel = select_stages(donor.info, receiver.info, o.donor_stages);
  const std::vector<int> rsel = select_stages(receiver.info, donor.info, o.receiver_stages);

  StudyResult r;
  r.donor = donor.info.name;
  r.receiver = receiver.info.name;
  const std::string logits = receiver.info.outputs[0];

  // Pairs and the donor stages their cuts read.
  std::vector<bool> donor_needed(donor.info.stages.size(), false);
  for (int i : dsel) donor_needed[i] = true;
  for (int i : dsel)
    for (int j : rsel) {
      StudyPair p;
      p.i = i;
      p.j = j;
      p.donor_stage = donor.info.stages[i].name;
      p.receiver_stage = receiver.info.stages[j].name;
      try {
        for (const auto& l : links_for_cut(donor, receiver, i, j)) donor_needed[l.donor_stage] = true;
      } catch (const Error& e) {
        std::fprintf(stderr, "study: skipping %s -> %s: %s\n", p.donor_stage.c_str(),
                     p.receiver_stage.c_str(), e.what());
        continue;
      }
      r.pairs.push_back(p);
    }

  WeightsArena weights(be);
  std::vector<std::string> dwanted, rwanted;
  for (size_t i = 0; i < donor.info.stages.size(); ++i)
    if (donor_needed[i]) dwanted.push_back(donor.info.stages[i].tensor);
  const bool donor_classifies = donor.info.task == "classification" &&
                                donor.info.outputs.size() == 1;
  if (donor_classifies) dwanted.push_back(donor.info.outputs[0]);
  for (int j : rsel) rwanted.push_back(receiver.info.stages[j].tensor);
  rwanted.push_back(logits);
  // Both inputs are uploaded for every image.
  Executor dex(donor.graph, be, weights, {donor.info.input}, dwanted, Executor::Inputs::EachRun);
  Executor rex(receiver.graph, be, weights, {receiver.info.input}, rwanted,
               Executor::Inputs::EachRun);
  std::vector<std::unique_ptr<ReceiverSuffix>> suffixes;
  for (const auto& p : r.pairs)
    suffixes.emplace_back(
        new ReceiverSuffix(donor, receiver, p.i, p.j, o.adapters, be, weights, {logits}));
  weights.commit();
  dex.allocate();
  rex.allocate();
  std::vector<const Tensor*> donor_outputs(donor.info.stages.size(), nullptr);
  for (size_t i = 0; i < donor.info.stages.size(); ++i)
    if (donor_needed[i]) donor_outputs[i] = &dex.output(donor.info.stages[i].tensor);
  for (auto& s : suffixes) s->allocate(donor_outputs);

  const int classes = static_cast<int>(rex.output(logits).numel());
  auto items = read_labelled_images(o.labels_path, classes);
  if (o.limit > 0 && o.limit < items.size()) items.resize(o.limit);
  check(items.size() >= 4, ErrorKind::Argument, "the study needs at least 4 images, got ",
        items.size());

  std::vector<std::unique_ptr<GramAccumulator>> dgram, rgram;
  for (size_t k = 0; k < dsel.size(); ++k) dgram.emplace_back(new GramAccumulator(o.spill_dir));
  for (size_t k = 0; k < rsel.size(); ++k) rgram.emplace_back(new GramAccumulator(o.spill_dir));

  Preprocessor pre;
  const ClassifyPreprocess rpre = classify_preprocess_for(receiver.info);
  const bool donor_detects = donor.info.task == "detection";
  const ClassifyPreprocess dpre = donor_detects ? ClassifyPreprocess() : classify_preprocess_for(donor.info);
  DetectPreprocess ddet;
  ddet.target = static_cast<int>(donor.info.input_shape[3]);
  std::vector<float> dinput(dex.input(donor.info.input).numel()),
      rinput(rex.input(receiver.info.input).numel()), host;
  std::vector<size_t> correct(r.pairs.size(), 0);
  size_t receiver_correct = 0, donor_correct = 0;

  Progress progress("study " + r.donor + " -> " + r.receiver, items.size());
  for (size_t n = 0; n < items.size(); ++n) {
    Image img = load_image(items[n].path);
    if (donor_detects) pre.detect(img, ddet, dinput.data());
    else pre.classify(img, dpre, dinput.data());
    pre.classify(img, rpre, rinput.data());
    be.upload(dex.input(donor.info.input).data, dinput.data(), dinput.size() * sizeof(float));
    be.upload(rex.input(receiver.info.input).data, rinput.data(), rinput.size() * sizeof(float));
    dex.run();
    rex.run();
    for (size_t k = 0; k < dsel.size(); ++k) {
      fetch(be, dex.output(donor.info.stages[dsel[k]].tensor), host);
      dgram[k]->add_example(host.data(), host.size());
    }
    for (size_t k = 0; k < rsel.size(); ++k) {
      fetch(be, rex.output(receiver.info.stages[rsel[k]].tensor), host);
      rgram[k]->add_example(host.data(), host.size());
    }
    fetch(be, rex.output(logits), host);
    receiver_correct += argmax(host.data(), classes) == items[n].label;
    if (donor_classifies) {
      fetch(be, dex.output(donor.info.outputs[0]), host);
      donor_correct += argmax(host.data(), static_cast<int64_t>(host.size())) == items[n].label;
    }
    for (size_t p = 0; p < suffixes.size(); ++p) {
      suffixes[p]->run();
      fetch(be, suffixes[p]->output(logits), host);
      correct[p] += argmax(host.data(), classes) == items[n].label;
    }
    progress.step(n + 1);
  }
  progress.finish();
  const double total = static_cast<double>(items.size());
  r.images = items.size();
  r.receiver_acc = receiver_correct / total;
  if (donor_classifies) r.donor_acc = donor_correct / total;

  // Gram matrices on the study's backend (float64 syrk: all CPU threads, or cuBLAS).
  std::fprintf(stderr, "study: Gram matrices of %zu + %zu stages over %zu images on %s\n",
               dsel.size(), rsel.size(), items.size(), be.name().c_str());
  std::vector<Gram> dg, rg;
  for (auto& a : dgram) dg.push_back(a->gram(be));
  for (auto& a : rgram) rg.push_back(a->gram(be));

  CkaOptions chosen, other;
  chosen.estimator = o.estimator;
  other.estimator = o.estimator == CkaEstimator::Biased ? CkaEstimator::Unbiased : CkaEstimator::Biased;
  auto matrix = [&](const std::vector<Gram>& a, const std::vector<Gram>& b) {
    std::vector<std::vector<double>> m(a.size(), std::vector<double>(b.size()));
    for (size_t x = 0; x < a.size(); ++x)
      for (size_t y = 0; y < b.size(); ++y) m[x][y] = cka(a[x], b[y], chosen);
    return m;
  };
  for (int i : dsel) r.donor_stages.push_back(donor.info.stages[i].name);
  for (int j : rsel) r.receiver_stages.push_back(receiver.info.stages[j].name);
  r.s_donor = matrix(dg, dg);
  r.s_receiver = matrix(rg, rg);
  r.s_cross = matrix(dg, rg);

  const ModelAnalysis ra = analyze(receiver);
  for (size_t p = 0; p < r.pairs.size(); ++p) {
    StudyPair& sp = r.pairs[p];
    const size_t di = std::find(dsel.begin(), dsel.end(), sp.i) - dsel.begin();
    const size_t rj = std::find(rsel.begin(), rsel.end(), sp.j) - rsel.begin();
    sp.s = r.s_cross[di][rj];
    sp.s_other = cka(dg[di], rg[rj], other);
    sp.acc = correct[p] / total;
    for (int k = 0; k <= sp.j; ++k) {
      sp.flops += ra.stages[k].flops;
      sp.params += ra.stages[k].params;
    }
    const Shape& ds = donor.info.stages[sp.i].shape;
    sp.size = ds.numel() / ds[0];
  }

  // Correlations of Acc with each metric, same-stage (i and j name the same stage)
  // and cross-stage (every pair).
  auto correlate = [&](bool same) {
    std::vector<double> acc, s, flops, params, size;
    for (const auto& p : r.pairs) {
      if (same && p.donor_stage != p.receiver_stage) continue;
      acc.push_back(p.acc);
      s.push_back(p.s);
      flops.push_back(static_cast<double>(p.flops));
      params.push_back(static_cast<double>(p.params));
      size.push_back(static_cast<double>(p.size));
    }
    std::vector<Correlation> c;
    c.push_back({"S", pearson(acc, s), spearman(acc, s)});
    c.push_back({"params", pearson(acc, params), spearman(acc, params)});
    c.push_back({"size", pearson(acc, size), spearman(acc, size)});
    c.push_back({"flops", pearson(acc, flops), spearman(acc, flops)});
    return c;
  };
  r.same_stage = correlate(true);
  r.cross_stage = correlate(false);

  // Collapse threshold: a pair has collapsed when its Acc is below half the
  // unshared receiver's. The threshold is the S cut that best separates collapsed
  // (below) from working (above) pairs; ties go to the middle of the best range.
  std::vector<std::pair<double, bool>> sc;
  size_t collapsed = 0;
  for (const auto& p : r.pairs) {
    sc.push_back({p.s, p.acc < 0.5 * r.receiver_acc});
    collapsed += sc.back().second;
  }
  r.collapsed_pairs = collapsed;
  if (collapsed == 0 || collapsed == sc.size()) {  // no boundary to find
    r.collapse_threshold = NAN;
    r.collapse_rule_accuracy = NAN;
    return r;
  }
  std::sort(sc.begin(), sc.end());
  int best = -1;
  std::vector<size_t> best_at;
  for (size_t cut = 0; cut <= sc.size(); ++cut) {  // pairs [0, cut) predicted collapsed
    int ok = 0;
    for (size_t k = 0; k < sc.size(); ++k) ok += (k < cut) == sc[k].second;
    if (ok > best) {
      best = ok;
      best_at.clear();
    }
    if (ok == best) best_at.push_back(cut);
  }
  const size_t cut = best_at[best_at.size() / 2];
  r.collapse_threshold = cut == 0 ? sc.front().first
                         : cut == sc.size() ? sc.back().first
                                            : 0.5 * (sc[cut - 1].first + sc[cut].first);
  r.collapse_rule_accuracy = sc.empty() ? 0 : static_cast<double>(best) / sc.size();
  return r;
}

void write_study(const StudyResult& r, const StudyOptions& o) {
  OutputFiles out;
  std::ostringstream csv;
  csv << "donor_stage,receiver_stage,S,S_other,acc,flops,size,params,unshared_acc\n";
  for (const auto& p : r.pairs)
    csv << p.donor_stage << "," << p.receiver_stage << "," << p.s << "," << p.s_other << ","
        << p.acc << "," << p.flops << "," << p.size << "," << p.params << "," << r.receiver_acc
        << "\n";
  out.add(o.out_dir + "/pairs.csv", csv.str());

  // Rows are the first model's stages, columns the second's, both named.
  auto matrix_csv = [](const std::vector<std::vector<double>>& m,
                       const std::vector<std::string>& rows, const std::vector<std::string>& cols) {
    std::ostringstream s;
    s << "stage";
    for (const auto& c : cols) s << "," << c;
    s << "\n";
    for (size_t x = 0; x < m.size(); ++x) {
      s << rows[x];
      for (double v : m[x]) s << "," << v;
      s << "\n";
    }
    return s.str();
  };
  out.add(o.out_dir + "/cka_donor.csv", matrix_csv(r.s_donor, r.donor_stages, r.donor_stages));
  out.add(o.out_dir + "/cka_receiver.csv",
          matrix_csv(r.s_receiver, r.receiver_stages, r.receiver_stages));
  out.add(o.out_dir + "/cka_cross.csv", matrix_csv(r.s_cross, r.donor_stages, r.receiver_stages));

  nlohmann::json j;
  j["donor"] = r.donor;
  j["receiver"] = r.receiver;
  j["images"] = r.images;
  j["estimator"] = cka_estimator_name(o.estimator);
  j["receiver_unshared_top1"] = r.receiver_acc;
  if (r.donor_acc >= 0) j["donor_top1"] = r.donor_acc;
  j["adapters"] = {{"upsample", resize_method_name(o.adapters.upsample)},
                   {"downsample", resize_method_name(o.adapters.downsample)}};
  auto corr = [](const std::vector<Correlation>& c) {
    nlohmann::json out;
    for (const auto& x : c)
      out[x.metric] = {{"pearson", std::isnan(x.pearson) ? nlohmann::json() : nlohmann::json(x.pearson)},
                       {"spearman", std::isnan(x.spearman) ? nlohmann::json() : nlohmann::json(x.spearman)}};
    return out;
  };
  j["same_stage"] = corr(r.same_stage);
  j["cross_stage"] = corr(r.cross_stage);
  auto number = [](double v) { return std::isnan(v) ? nlohmann::json() : nlohmann::json(v); };
  j["collapse"] = {{"threshold_S", number(r.collapse_threshold)},
                   {"rule", "a pair collapses when acc < 0.5 x unshared receiver top-1"},
                   {"collapsed_pairs", r.collapsed_pairs},
                   {"pairs", r.pairs.size()},
                   {"rule_accuracy", number(r.collapse_rule_accuracy)}};
  j["donor_stages"] = r.donor_stages;
  j["receiver_stages"] = r.receiver_stages;
  out.add(o.out_dir + "/summary.json", j.dump(1) + "\n");
  out.commit();
}

}  // namespace repshare
