// Every subcommand that writes files checks its output paths before any work: a
// missing folder, a folder given for a file, or a file it cannot create fails the
// command at once with the path named, instead of after an evaluation or an hour of
// video. Each case also names a model that does not exist: the error must be about
// the output, which shows the check came first.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "apps/app_util.h"
#include "engine/error.h"
#include "loaders/draw.h"
#include "loaders/output_file.h"
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

bool exists(const std::string& path) { return std::filesystem::exists(path); }

const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/";
const std::string kClassifier = kFixtures + "tiny_tf_efficientnet/model.onnx";
const std::string kDetector = kFixtures + "tiny_detector/model.onnx";
const std::string kImage = kFixtures + "images/grey.png";

std::string scratch(const std::string& name) {
  return "/tmp/repshare_outputs_" + std::to_string(getpid()) + "_" + name;
}

// A command's outputs are written together: when one cannot be, none is left, not
// even the ones staged before it; the same path twice is refused.
TEST(CommandOutputs, OutputFilesLeaveNoneWhenOneFails) {
  const std::string first = scratch("first.json"), second = scratch("second.csv");
  {
    OutputFiles out;
    out.add(first, "{}\n");
    EXPECT_TRUE(exists(first + ".tmp"));
    EXPECT_THROW(out.add("/nonexistent-repshare-folder/x.csv", "a,b\n"), Error);
  }
  EXPECT_FALSE(exists(first));
  EXPECT_FALSE(exists(first + ".tmp"));
  {
    OutputFiles out;
    out.add(first, "{}\n");
    EXPECT_THROW(out.add(first, "again"), Error);
  }
  EXPECT_FALSE(exists(first + ".tmp"));
  {
    OutputFiles out;
    out.add(first, "{}\n");
    out.add(second, "a,b\n");
    EXPECT_FALSE(exists(first));  // nothing is in place before commit()
    out.commit();
  }
  std::string line;
  std::getline(std::ifstream(second), line);
  EXPECT_EQ(line, "a,b");
  EXPECT_TRUE(exists(first));
  EXPECT_FALSE(exists(first + ".tmp") || exists(second + ".tmp"));
  std::remove(first.c_str());
  std::remove(second.c_str());
}

// A device or pipe is written in place, never replaced by a renamed file, and a
// write it refuses is an error even when the bytes fit the stream's buffer.
TEST(CommandOutputs, DevicesAreWrittenInPlaceAndTheirErrorsReported) {
  const std::string fifo = scratch("fifo.png");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int reader = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK);  // keeps the pipe open
  ASSERT_GE(reader, 0);
  Image img;
  img.reset(8, 4);
  EXPECT_NO_THROW(write_png(img, fifo));
  struct stat st;
  ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  char magic[4] = {};
  EXPECT_EQ(::read(reader, magic, 4), 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  ::close(reader);
  std::remove(fifo.c_str());
  const std::string msg = [] {
    try {
      write_file_atomic("/dev/full", "{}\n");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  EXPECT_NE(msg.find("cannot write '/dev/full'"), std::string::npos) << msg;
}

// A link is followed: the file it names is replaced and the link stays a link. A
// process's own stream (/dev/stdout is a link to /proc/self/fd/1) is appended to in
// place: what was written to it before stays.
TEST(CommandOutputs, LinksAreFollowedAndStreamsAppendedTo) {
  const std::string real = scratch("real.json"), link = scratch("link.json");
  std::ofstream(real) << "old\n";
  ASSERT_EQ(::symlink(real.c_str(), link.c_str()), 0);
  write_file_atomic(link, "new\n");
  struct stat st;
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  std::string line;
  std::getline(std::ifstream(real), line);
  EXPECT_EQ(line, "new");
  EXPECT_FALSE(exists(real + ".tmp") || exists(link + ".tmp"));
  std::remove(link.c_str());

  const int fd = ::open(real.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  write_file_atomic("/dev/fd/" + std::to_string(fd), "more\n");
  ::close(fd);
  std::ifstream in(real);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "new\nmore\n");
  std::remove(real.c_str());

  // Below an input folder nothing is written.
  const std::string folder = scratch("inputs");
  std::filesystem::create_directories(folder);
  EXPECT_THROW(check_can_write(folder + "/x.json", {folder}), Error);
  EXPECT_NO_THROW(check_can_write(scratch("beside.json"), {folder}));
  std::filesystem::remove_all(folder);
}

// An output folder made for a command is removed again, with the parents it made,
// when the command fails before writing into it; kept otherwise; and a folder
// that was there already is never removed.
TEST(CommandOutputs, OutputFolderIsRemovedIfTheCommandFails) {
  const std::string top = scratch("folder"), leaf = top + "/a/b";
  {
    OutputFolder folder(leaf);
    EXPECT_TRUE(std::filesystem::is_directory(leaf));
  }
  EXPECT_FALSE(exists(top));
  {
    OutputFolder folder(leaf);
    folder.keep();
  }
  EXPECT_TRUE(std::filesystem::is_directory(leaf));
  { OutputFolder again(leaf); }
  EXPECT_TRUE(std::filesystem::is_directory(leaf));
  std::filesystem::remove_all(top);
  EXPECT_THROW(OutputFolder("/proc/repshare-x"), Error);
}

// Helper programs (the study's plots, the onnxruntime anchor) run without a shell:
// a user's path is one argument, whatever it contains.
TEST(CommandOutputs, RunProgramPassesArgumentsWithoutAShell) {
  const std::string marker = scratch("injected");
  std::string out;
  EXPECT_EQ(run_program({"echo", "q'$(touch " + marker + ")'q"}, &out), 0);
  EXPECT_EQ(out, "q'$(touch " + marker + ")'q\n");
  EXPECT_FALSE(exists(marker));
  EXPECT_EQ(run_program({"false"}, nullptr), 1);
  EXPECT_EQ(run_program({"/nonexistent-repshare-program"}, &out), -1);
}

// Command lines that are wrong in a way a parser could let through: each fails with
// its reason named, an argument error (exit 2), before any work.
TEST(CommandOutputs, OutOfRangeOptionsAreArgumentErrors) {
  const struct {
    std::string args, message;
  } cases[] = {
      {"classify --model " + kClassifier + " " + kImage + " --threads 99999",
       "--threads must be 1 to 256"},
      {"classify --model " + kClassifier + " " + kImage + " --threads 0",
       "--threads must be 1 to 256"},
      {"classify --model " + kClassifier + " " + kImage + " --top 4294967297",
       "--top is out of range"},
      {"classify --model " + kClassifier + " " + kImage + " --logits-out --json",
       "--logits-out needs a value"},
      {"inspect " + kClassifier + " --json=1", "--json is a switch"},
      {"inspect " + kClassifier + " --frob", "unknown option --frob"},
      {"eval --model " + kClassifier + " --labels x.txt --limit -1", "--limit must not be"},
      {"detect --model " + kDetector + " " + kImage + " --score-threshold nan",
       "--score-threshold must be a score from 0 to 1"},
      {"run --models " + kDetector + " " + kImage + " --score-threshold 2",
       "--score-threshold must be a score from 0 to 1"},
      {"bench --model " + kClassifier + " --runs 2 --runs 3", "--runs is given more than once"},
      {"bench --model " + kClassifier + " --profile-steps -3", "--profile-steps must not be"},
      {"mem " + kClassifier + " --os-reserve 1GiB", "give --device-mem too"},
      {"study --donor a.onnx --receiver b.onnx --labels x --out " + scratch("s") +
           " --donor-stages ,",
       "has an empty stage name"},
      {"mem " + kClassifier + " --device-mem 99999999999999999999GiB", "larger than 1 PiB"},
  };
  for (const auto& c : cases) {
    CommandResult r = run_repshare(c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}

// Outputs that would overwrite an input, or each other, are refused before any work,
// and a failed command leaves no output folder it made.
TEST(CommandOutputs, OutputsNeverReplaceInputsOrEachOther) {
  const std::string image = scratch("victim.png");
  std::filesystem::copy_file(kImage, image, std::filesystem::copy_options::overwrite_existing);
  const auto before = std::filesystem::file_size(image);
  CommandResult same =
      run_repshare("classify --model " + kClassifier + " " + image + " --logits-out " + image);
  EXPECT_EQ(same.status, 2) << same.output;
  EXPECT_NE(same.output.find("it would be overwritten"), std::string::npos) << same.output;
  EXPECT_EQ(std::filesystem::file_size(image), before);

  const std::string other = scratch("other"), folder = scratch("drawn") + "/boxes";
  std::filesystem::create_directories(other);
  // The same name in another folder: both would be drawn to FOLDER/<name>.png.
  const std::string namesake = other + "/" + std::filesystem::path(image).filename().string();
  std::filesystem::copy_file(kImage, namesake, std::filesystem::copy_options::overwrite_existing);
  CommandResult twice = run_repshare("detect --model " + kDetector + " " + image + " " + namesake +
                                     " --draw-dir " + folder);
  EXPECT_EQ(twice.status, 2) << twice.output;
  EXPECT_NE(twice.output.find("would both be drawn to"), std::string::npos) << twice.output;
  EXPECT_FALSE(exists(scratch("drawn")));
  CommandResult bad_model =
      run_repshare("detect --model /nonexistent/d0.onnx " + image + " --draw-dir " + folder);
  EXPECT_NE(bad_model.status, 0);
  EXPECT_FALSE(exists(scratch("drawn")));
  CommandResult study = run_repshare("study --donor /nonexistent/a.onnx --receiver " + kClassifier +
                                     " --labels x.txt --out " + folder);
  EXPECT_NE(study.status, 0);
  EXPECT_NE(study.output.find("/nonexistent/a.onnx"), std::string::npos) << study.output;
  EXPECT_FALSE(exists(scratch("drawn")));
  std::filesystem::remove_all(other);
  std::remove(image.c_str());
}

// A model without its sidecar (no task, no named outputs) says which file is missing.
TEST(CommandOutputs, AMissingSidecarIsNamed) {
  CommandResult r = run_repshare("run --models " + kClassifier + " " + kImage);
  EXPECT_NE(r.status, 0);
  const std::string sidecar = kFixtures + "tiny_tf_efficientnet/model.json";
  EXPECT_NE(r.output.find("no sidecar '" + sidecar + "' was found"), std::string::npos) << r.output;
}

// run writes its frame lines to a device as every command does (it once refused).
TEST(CommandOutputs, RunWritesToDevices) {
  const std::string summary = scratch("summary.json");
  CommandResult r = run_repshare("run --models " + kDetector + " " + kImage +
                                 " --out /dev/null --summary " + summary);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(exists(summary));
  std::remove(summary.c_str());
}

// Results that cannot reach standard output (a full disk) fail the command.
TEST(CommandOutputs, AFullStandardOutputIsAnError) {
  CommandResult r = run_repshare("inspect " + kClassifier + " > /dev/full");
  EXPECT_EQ(r.status, 1);
  // run prints its report to stdout: when that is lost, its files are not written.
  const std::string summary = scratch("lost_summary.json");
  r = run_repshare("run --models " + kDetector + " " + kImage + " --summary " + summary +
                   " > /dev/full");
  EXPECT_EQ(r.status, 1);
  EXPECT_FALSE(exists(summary));
}

}  // namespace
}  // namespace repshare
