#include "merge/memory.h"

#include <malloc.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "engine/error.h"

namespace repshare {

namespace {
// Sum of f(item) over a container.
template <typename Items, typename F>
size_t sum_of(const Items& items, F f) {
  size_t n = 0;
  for (const auto& item : items) n += f(item);
  return n;
}
}  // namespace

size_t PipelineMemory::activations() const {
  return sum_of(arenas, [](const ArenaMemory& a) { return a.bytes; });
}
size_t PipelineMemory::activation_lower_bound() const {
  return sum_of(arenas, [](const ArenaMemory& a) { return a.lower_bound; });
}
size_t MemoryReport::activations() const {
  return sum_of(pipelines, [](const PipelineMemory& p) { return p.activations(); });
}
size_t MemoryReport::activation_lower_bound() const {
  return sum_of(pipelines, [](const PipelineMemory& p) { return p.activation_lower_bound(); });
}
size_t MemoryReport::host_buffers() const {
  return sum_of(pipelines, [](const PipelineMemory& p) { return p.host_buffers; });
}
size_t MemoryReport::overhead_bytes() const {
  return sum_of(overhead, [](const BackendMemoryItem& o) { return o.bytes; });
}

nlohmann::json to_json(const MemoryReport& r) {
  nlohmann::json pipelines = nlohmann::json::array();
  for (const PipelineMemory& p : r.pipelines) {
    nlohmann::json stages = nlohmann::json::array();
    for (const StageWeights& s : p.stages)
      stages.push_back({{"stage", s.name}, {"weight_bytes", s.bytes}, {"loaded", s.loaded}});
    nlohmann::json arenas = nlohmann::json::array();
    for (const ArenaMemory& a : p.arenas)
      arenas.push_back({{"name", a.name},
                        {"bytes", a.bytes},
                        {"lower_bound", a.lower_bound},
                        {"largest_workspace", a.largest_workspace}});
    pipelines.push_back({{"name", p.name},
                         {"model", p.model},
                         {"shares_from", p.shares_from},
                         {"weights_owned", p.weights_owned},
                         {"weights_borrowed", p.weights_borrowed},
                         {"activations", p.activations()},
                         {"activation_lower_bound", p.activation_lower_bound()},
                         {"host_buffers", p.host_buffers},
                         {"total", p.total()},
                         {"stages", stages},
                         {"arenas", arenas}});
  }
  nlohmann::json overhead = nlohmann::json::array();
  for (const BackendMemoryItem& o : r.overhead) overhead.push_back({{"name", o.name}, {"bytes", o.bytes}});
  return {{"label", r.label},
          {"backend", r.backend},
          {"weights", r.weights},
          {"activations", r.activations()},
          {"activation_lower_bound", r.activation_lower_bound()},
          {"host_buffers", r.host_buffers()},
          {"backend_overhead", overhead},
          {"total", r.total()},
          {"pipelines", pipelines}};
}

std::string format_report(const MemoryReport& r) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-12s %-26s %11s %11s %11s %11s %11s\n", "pipeline",
                "model", "weights", "borrowed", "activations", "(bound)", "host io");
  out += line;
  for (const PipelineMemory& p : r.pipelines) {
    std::snprintf(line, sizeof line, "%-12s %-26s %11s %11s %11s %11s %11s\n", p.name.c_str(),
                  p.model.c_str(), format_bytes(p.weights_owned).c_str(),
                  format_bytes(p.weights_borrowed).c_str(), format_bytes(p.activations()).c_str(),
                  format_bytes(p.activation_lower_bound()).c_str(),
                  format_bytes(p.host_buffers).c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "%-12s %-26s %11s %11s %11s %11s %11s   total %s\n",
                ("[" + r.label + "]").c_str(), "", format_bytes(r.weights).c_str(), "",
                format_bytes(r.activations()).c_str(),
                format_bytes(r.activation_lower_bound()).c_str(),
                format_bytes(r.host_buffers()).c_str(), format_bytes(r.total()).c_str());
  out += line;
  for (const BackendMemoryItem& o : r.overhead) {
    std::snprintf(line, sizeof line, "  + %-47s %11s\n", o.name.c_str(), format_bytes(o.bytes).c_str());
    out += line;
  }
  if (!r.overhead.empty()) {
    std::snprintf(line, sizeof line, "  on the %s device: weights + activations %s, with the above %s\n",
                  r.backend.c_str(), format_bytes(r.arena_bytes()).c_str(),
                  format_bytes(r.arena_bytes() + r.overhead_bytes()).c_str());
    out += line;
  }
  return out;
}

size_t parse_byte_size(const std::string& s, const std::string& what) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(s, &used);
  } catch (const std::exception&) {
    fail(ErrorKind::Argument, what, ": '", s, "' is not a size (e.g. 4GiB, 512MiB, 1.5GB)");
  }
  const std::string unit = s.substr(used);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "k" || unit == "K" || unit == "kB" || unit == "KB") scale = 1e3;
  else if (unit == "M" || unit == "MB") scale = 1e6;
  else if (unit == "G" || unit == "GB") scale = 1e9;
  else if (unit == "Ki" || unit == "KiB") scale = 1024.0;
  else if (unit == "Mi" || unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "Gi" || unit == "GiB") scale = 1024.0 * 1024 * 1024;
  check(scale > 0 && value >= 0 && std::isfinite(value), ErrorKind::Argument, what, ": '", s,
        "' is not a size (units: B, kB, MB, GB, KiB, MiB, GiB)");
  // 2^50 bytes (1 PiB) is beyond any device, and far inside size_t and llround.
  check(value * scale <= std::ldexp(1.0, 50), ErrorKind::Argument, what, ": '", s,
        "' is larger than 1 PiB");
  return static_cast<size_t>(std::llround(value * scale));
}

size_t overhead_grown_since(const MemoryReport& r, const Backend& backend) {
  size_t now = 0;
  for (const BackendMemoryItem& o : backend.overhead()) now += o.bytes;
  return now > r.overhead_bytes() ? now - r.overhead_bytes() : 0;
}

std::string describe_reported(size_t total, size_t grown) {
  std::string s = format_bytes(total);
  if (grown > 0) s += " + " + format_bytes(grown) + " the backend took while running";
  return s;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::fabs(bytes) >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

size_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  size_t pages_total = 0, pages_resident = 0;
  if (!(f >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

void release_free_heap() { malloc_trim(0); }

}  // namespace repshare
