#include "apps/args.h"

#include <cstdlib>

#include "engine/error.h"

namespace repshare {

Args::Args(std::vector<std::string> argv, std::set<std::string> switches)
    : switches_(std::move(switches)) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a.substr(2);
      auto eq = name.find('=');
      if (eq != std::string::npos) {
        values_.emplace(name.substr(0, eq), name.substr(eq + 1));
      } else if (switches_.count(name)) {
        switches_given_.insert(name);
      } else {
        check(i + 1 < argv.size(), ErrorKind::Argument, "option --", name, " needs a value");
        values_.emplace(name, argv[++i]);
      }
    } else {
      positionals_.push_back(a);
    }
  }
}

std::string Args::get(const std::string& name, const std::string& def) {
  used_.insert(name);
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second;
}

std::string Args::require(const std::string& name) {
  used_.insert(name);
  auto it = values_.find(name);
  check(it != values_.end(), ErrorKind::Argument, "missing required option --", name);
  return it->second;
}

int Args::get_int(const std::string& name, int def) {
  std::string v = get(name);
  if (v.empty()) return def;
  char* end = nullptr;
  long r = std::strtol(v.c_str(), &end, 10);
  check(end && *end == 0, ErrorKind::Argument, "--", name, " expects an integer, got '", v, "'");
  return static_cast<int>(r);
}

double Args::get_double(const std::string& name, double def) {
  std::string v = get(name);
  if (v.empty()) return def;
  char* end = nullptr;
  double r = std::strtod(v.c_str(), &end);
  check(end && *end == 0, ErrorKind::Argument, "--", name, " expects a number, got '", v, "'");
  return r;
}

bool Args::flag(const std::string& name) {
  used_.insert(name);
  return switches_given_.count(name) != 0;
}

std::vector<std::string> Args::all(const std::string& name) {
  used_.insert(name);
  std::vector<std::string> out;
  auto range = values_.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
  return out;
}

void Args::finish() const {
  for (const auto& kv : values_)
    check(used_.count(kv.first) != 0, ErrorKind::Argument, "unknown option --", kv.first);
  for (const auto& s : switches_given_)
    check(used_.count(s) != 0, ErrorKind::Argument, "unknown option --", s);
}

}  // namespace repshare
