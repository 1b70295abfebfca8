// Every subcommand that writes files checks its output paths before any work: a
// missing folder, a folder given for a file, or a file it cannot create fails the
// command at once with the path named, instead of after an evaluation or an hour of
// video. Each case also names a model that does not exist: the error must be about
// the output, which shows the check came first.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "apps/app_util.h"
#include "engine/error.h"
#include "tests/cli_runner.h"

namespace repshare {
namespace {

TEST(CommandOutputs, AnUnwritableOutputFailsBeforeAnyWork) {
  const std::string missing = "/nonexistent-repshare-folder/out";
  const std::string model = "--model /nonexistent/model.onnx";
  const std::string cases[] = {
      "classify " + model + " x.jpg --logits-out " + missing + ".f32",
      "eval " + model + " --labels x.txt --json " + missing + ".json",
      "eval " + model + " --labels x.txt --predictions " + missing + ".csv",
      "eval-det " + model + " --data x --json " + missing + ".json",
      "eval-det " + model + " --data x --detections " + missing + ".json",
      "detect " + model + " x.jpg --json " + missing + ".json",
      "detect " + model + " x.jpg --draw " + missing + ".png",
      "bench " + model + " --json " + missing + ".json",
      "run --models /nonexistent/model.onnx x.jpg --out " + missing + ".jsonl",
      "run --models /nonexistent/model.onnx x.jpg --summary " + missing + ".json",
  };
  for (const std::string& args : cases) {
    CommandResult r = run_repshare(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_NE(r.output.find("cannot write '" + missing), std::string::npos) << args << "\n"
                                                                             << r.output;
    EXPECT_EQ(r.output.find("model"), std::string::npos) << args << "\n" << r.output;
  }
  // A folder where a file is wanted, and a folder for drawings that cannot be made.
  CommandResult folder = run_repshare("eval " + model + " --labels x.txt --json /tmp");
  EXPECT_NE(folder.status, 0);
  EXPECT_NE(folder.output.find("'/tmp' is a folder"), std::string::npos) << folder.output;
  CommandResult draw = run_repshare("detect " + model + " x.jpg --draw-dir /proc/repshare-x");
  EXPECT_NE(draw.status, 0);
  EXPECT_NE(draw.output.find("cannot create folder '/proc/repshare-x'"), std::string::npos)
      << draw.output;
}

// The check itself: a writable path passes and leaves nothing behind; a .tmp left
// over from an earlier run is kept; devices pass (they are written in place).
TEST(CommandOutputs, CheckCanWriteLeavesNoFile) {
  const std::string path = "/tmp/repshare_outputs_" + std::to_string(getpid()) + ".json";
  EXPECT_NO_THROW(check_can_write(path));
  EXPECT_FALSE(std::ifstream(path).good());
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());
  std::ofstream(path + ".tmp") << "left over";
  EXPECT_NO_THROW(check_can_write(path));
  std::string kept;
  std::getline(std::ifstream(path + ".tmp"), kept);
  EXPECT_EQ(kept, "left over");
  std::remove((path + ".tmp").c_str());
  EXPECT_NO_THROW(check_can_write("/dev/null"));
  EXPECT_NO_THROW(check_can_write(""));
  EXPECT_THROW(check_can_write("/nonexistent-repshare-folder/x.json"), Error);
}

}  // namespace
}  // namespace repshare
