// Runs the repshare binary built beside the tests (REPSHARE_BINARY) the way a user
// does, for the tests of the subcommands' output and errors.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace repshare {

struct CommandResult {
  int status = -1;     // exit code; -1 when it did not exit normally
  std::string output;  // stdout and stderr together
};

inline CommandResult run_repshare(const std::string& args) {
  const std::string cmd = std::string(REPSHARE_BINARY) + " " + args + " 2>&1";
  CommandResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  const int status = pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace repshare
