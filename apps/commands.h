// The subcommands of the `repshare` binary. Each lives in apps/cmd_<name>.cpp as
// `int cmd_<name>(const std::vector<std::string>& argv)` (argv without the program
// and subcommand names) and is listed in kCommands in apps/main.cpp. Errors are
// thrown as repshare::Error; main() prints them and exits non-zero.
#pragma once

#include <string>
#include <vector>

namespace repshare {

using CommandArgs = std::vector<std::string>;

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const CommandArgs& argv);
};

int cmd_inspect(const CommandArgs& argv);
int cmd_classify(const CommandArgs& argv);
int cmd_eval(const CommandArgs& argv);
int cmd_bench(const CommandArgs& argv);
int cmd_study(const CommandArgs& argv);
int cmd_cka(const CommandArgs& argv);
int cmd_detect(const CommandArgs& argv);
int cmd_eval_det(const CommandArgs& argv);
int cmd_run(const CommandArgs& argv);
int cmd_mem(const CommandArgs& argv);

}  // namespace repshare
