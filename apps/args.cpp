#include "apps/args.h"

#include <cerrno>
#include <climits>
#include <cstdlib>

#include "engine/error.h"

namespace repshare {

Args::Args(std::vector<std::string> argv, std::set<std::string> switches)
    : switches_(std::move(switches)) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--") {  // the end of options: what follows are positionals ("--x.jpg")
      positionals_.insert(positionals_.end(), argv.begin() + i + 1, argv.end());
      break;
    }
    if (a.size() <= 2 || a.compare(0, 2, "--") != 0) {
      positionals_.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    const auto eq = name.find('=');
    std::string value;
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      check(!switches_.count(name), ErrorKind::Argument, "option --", name,
            " is a switch and takes no value (got '", value, "')");
    } else if (switches_.count(name)) {
      switches_given_.insert(name);
      continue;
    } else if (i + 1 == argv.size()) {
      // Unknown or valueless: which one is told when the command asks for it
      // (get: "needs a value") or never does (finish: "unknown option").
      dangling_ = name;
      continue;
    } else {
      value = argv[++i];
      // "--out --json" is a forgotten value, not a file named "--json".
      check(value.size() <= 2 || value.compare(0, 2, "--") != 0, ErrorKind::Argument, "option --",
            name, " needs a value and got the option ", value);
    }
    check(!value.empty(), ErrorKind::Argument, "option --", name, " has an empty value");
    values_.emplace(name, value);
  }
}

std::string Args::get(const std::string& name, const std::string& def) {
  used_.insert(name);
  check(name != dangling_, ErrorKind::Argument, "option --", name, " needs a value");
  check(values_.count(name) <= 1, ErrorKind::Argument, "option --", name,
        " is given more than once");
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second;
}

std::string Args::require(const std::string& name) {
  const std::string v = get(name);
  check(!v.empty(), ErrorKind::Argument, "missing required option --", name);
  return v;
}

int Args::get_int(const std::string& name, int def) {
  std::string v = get(name);
  if (v.empty()) return def;
  char* end = nullptr;
  errno = 0;
  const long r = std::strtol(v.c_str(), &end, 10);
  check(end && *end == 0, ErrorKind::Argument, "--", name, " expects an integer, got '", v, "'");
  check(errno != ERANGE && r >= INT_MIN && r <= INT_MAX, ErrorKind::Argument, "--", name,
        " is out of range: '", v, "'");
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
  check(name != dangling_, ErrorKind::Argument, "option --", name, " needs a value");
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
  check(dangling_.empty() || used_.count(dangling_) != 0, ErrorKind::Argument, "unknown option --",
        dangling_);
}

}  // namespace repshare
