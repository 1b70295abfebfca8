// Minimal command-line parsing for the subcommands: --flag value (or --flag=value),
// --switch, and positionals (everything after a lone "--" is one). Errors name the flag: an unknown
// one, a missing or empty value, a value that is another option, a switch given a value, and a
// single-valued flag given twice.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace repshare {

class Args {
 public:
  // argv excludes the program and subcommand names. `switches` take no value.
  Args(std::vector<std::string> argv, std::set<std::string> switches);

  // Value of --name, or def when absent. Marks the flag as used.
  std::string get(const std::string& name, const std::string& def = "");
  std::string require(const std::string& name);
  int get_int(const std::string& name, int def);
  double get_double(const std::string& name, double def);
  bool flag(const std::string& name);  // a switch
  std::vector<std::string> all(const std::string& name);  // repeated --name v
  const std::vector<std::string>& positionals() const { return positionals_; }
  // Throws naming any flag given but never asked for (a typo, or a wrong command).
  void finish() const;

 private:
  std::multimap<std::string, std::string> values_;
  std::set<std::string> switches_given_;
  std::set<std::string> switches_;
  mutable std::set<std::string> used_;
  std::vector<std::string> positionals_;
  std::string dangling_;  // a last argument --name with no value after it
};

}  // namespace repshare
