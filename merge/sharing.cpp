#include "merge/sharing.h"

#include <set>

#include "engine/error.h"

namespace repshare {

std::vector<StageLink> links_for_cut(const Model& donor, const Model& receiver, int donor_stage,
                                     int receiver_stage) {
  const auto& rs = receiver.info.stages;
  check(donor_stage >= 0 && donor_stage < static_cast<int>(donor.info.stages.size()) &&
            receiver_stage >= 0 && receiver_stage < static_cast<int>(rs.size()),
        ErrorKind::Argument, "stage index out of range");
  const Graph& g = receiver.graph;
  std::vector<int> stage_of(g.values.size(), -1);
  for (int k = 0; k < static_cast<int>(rs.size()); ++k) stage_of[g.find(rs[k].tensor)] = k;
  // Walk back from the receiver's outputs; stop at stage tensors up to the cut.
  std::vector<int> producer = g.producers();
  std::vector<bool> seen(g.values.size(), false);
  std::vector<int> stack;
  for (const auto& o : receiver.info.outputs) stack.push_back(g.find(o));
  std::set<int> needed;
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    if (v < 0 || seen[v]) continue;
    seen[v] = true;
    if (stage_of[v] >= 0 && stage_of[v] <= receiver_stage) {
      needed.insert(stage_of[v]);
      continue;
    }
    check(producer[v] >= 0 || g.values[v].is_constant(), ErrorKind::Argument, "receiver '",
          receiver.info.name, "': cutting after stage '", rs[receiver_stage].name,
          "' leaves tensor '", g.values[v].name, "' without a source");
    if (producer[v] >= 0)
      for (int i : g.nodes[producer[v]].inputs) stack.push_back(i);
  }
  check(needed.count(receiver_stage) != 0, ErrorKind::Argument, "receiver '",
        receiver.info.name, "': nothing after stage '", rs[receiver_stage].name, "' reads it");
  std::vector<StageLink> links;
  for (int k : needed) {
    const int d = donor_stage - (receiver_stage - k);
    check(d >= 0, ErrorKind::Argument, "incompatible cut: receiver '", receiver.info.name,
          "' after stage '", rs[receiver_stage].name, "' also reads stage '", rs[k].name,
          "', which would come from before the donor's first stage");
    links.push_back({d, k});
  }
  return links;
}

ReceiverSuffix::ReceiverSuffix(const Model& donor, const Model& receiver, int donor_stage,
                               int receiver_stage, const AdapterOptions& options,
                               Backend& backend, WeightsArena& weights,
                               std::vector<std::string> wanted, const SuffixStorage& storage)
    : links_(links_for_cut(donor, receiver, donor_stage, receiver_stage)),
      donor_dtype_(storage.donor_stages ? backend.float_storage() : DType::F32) {
  for (const auto& l : links_) {
    const Stage& ds = donor.info.stages[l.donor_stage];
    const Stage& rs = receiver.info.stages[l.receiver_stage];
    Shape target = rs.shape;
    target[0] = ds.shape[0];  // the donor's batch
    Graph adapter = build_adapter_graph(ds.shape, target, options);
    adapter.name = "adapter:" + donor.info.name + "/" + ds.name + "->" + receiver.info.name +
                   "/" + rs.name;
    std::vector<std::string> adapter_in_storage{"adapted"};
    if (storage.donor_stages) adapter_in_storage.push_back("donor");
    adapters_.emplace_back(new Executor(adapter, backend, weights, {"donor"}, {"adapted"},
                                        Executor::Inputs::Bound, adapter_in_storage));
    receiver_tensors_.push_back(rs.tensor);
  }
  if (wanted.empty()) wanted = receiver.info.outputs;
  std::vector<std::string> receiver_in_storage = receiver_tensors_;
  for (const auto& o : storage.outputs) receiver_in_storage.push_back(o);
  receiver_.reset(new Executor(receiver.graph, backend, weights, receiver_tensors_, wanted,
                               Executor::Inputs::Bound, receiver_in_storage));
}

void ReceiverSuffix::allocate(const std::vector<const Tensor*>& donor_stage_outputs) {
  for (size_t a = 0; a < adapters_.size(); ++a) {
    const Tensor* src = donor_stage_outputs.at(links_[a].donor_stage);
    check(src != nullptr, ErrorKind::Argument, "donor stage ", links_[a].donor_stage,
          " output was not provided");
    check(src->dtype == donor_dtype_, ErrorKind::Argument, "donor stage ", links_[a].donor_stage,
          " output is ", dtype_name(src->dtype), "; its adapter reads ", dtype_name(donor_dtype_));
  }
  for (size_t a = 0; a < adapters_.size(); ++a) {
    adapters_[a]->allocate();
    adapters_[a]->bind("donor", donor_stage_outputs[links_[a].donor_stage]->data);
  }
  receiver_->allocate();
  for (size_t a = 0; a < adapters_.size(); ++a)
    receiver_->bind(receiver_tensors_[a], adapters_[a]->output("adapted").data);
}

void ReceiverSuffix::run() {
  for (auto& a : adapters_) a->run();
  receiver_->run();
}

size_t ReceiverSuffix::activation_bytes() const {
  size_t total = receiver_->activation_bytes();
  for (const auto& a : adapters_) total += a->activation_bytes();
  return total;
}

}  // namespace repshare
