// repshare: one binary, one subcommand per job.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <exception>
#include <vector>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"

namespace repshare {
namespace {

const std::vector<Command> kCommands = {
    {"inspect", "ops, parameters, FLOPs, stages and cut points of a model", cmd_inspect},
    {"classify", "top-k ImageNet classes of images", cmd_classify},
    {"eval", "top-1/top-5 accuracy over a labelled image list", cmd_eval},
    {"bench", "latency, throughput and memory; vs onnxruntime", cmd_bench},
    {"study", "CKA similarity vs merged accuracy over stage pairs", cmd_study},
    {"cka", "CKA similarity of two feature files (.npy)", cmd_cka},
    {"detect", "COCO objects in images (EfficientDet)", cmd_detect},
    {"eval-det", "COCO box AP over a YOLO-layout image folder", cmd_eval_det},
    {"run", "pipelines over frames, sharing representations per a plan", cmd_run},
    {"mem", "memory of a model or plan: separate vs merged, does it fit", cmd_mem},
};

void usage(FILE* f) {
  std::fprintf(f, "usage: repshare <command> [options]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(f, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(f, "\n'repshare <command> --help' describes a command's options.\n");
}

}  // namespace
}  // namespace repshare

int main(int argc, char** argv) {
  using namespace repshare;
  // How long libgomp's idle threads spin before sleeping decides B0's speed on
  // 2 cores, since a network is ~150 short parallel regions. Sleeping at once
  // (OMP_WAIT_POLICY=PASSIVE) pays a futex wake-up per region: 28 ms per B0 on the
  // quiet machine against 18-20 ms spinning. libgomp's default spin (300,000
  // iterations) and ACTIVE's (unbounded) hold the cores after the network ends and
  // collapse when other processes share them. 10,000 iterations (tens of us)
  // bridge the gaps inside a network and give the cores back between frames:
  // under 6 competing busy loops B0 took 93-102 ms with it, 127-163 ms passive
  // (docs/results/cpu_speed.md). libgomp reads this once, when it loads, so set it
  // and restart; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins.
  if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) {
    setenv("GOMP_SPINCOUNT", "10000", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
  }
#if defined(__GLIBC__)
  // Per-frame buffers (decoded images, letterboxed inputs: 1-3 MB each) are
  // allocated and freed once per frame. glibc serves such blocks by mmap, but
  // after the first free raises its threshold and keeps later ones in the heap,
  // where they stay resident: `repshare run` on D0 + B0 grew 7 MiB past the
  // arenas over 21 frames (80.4 vs 73.4 MiB reported). A fixed threshold keeps
  // returning them, so the process uses what `repshare mem` reports.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      const int status = c.run(CommandArgs(argv + 2, argv + argc));
      check_stdout_written();
      return status;
    } catch (const Error& e) {
      std::fprintf(stderr, "repshare %s: error (%s): %s\n", c.name, error_kind_name(e.kind()),
                   e.what());
      return e.kind() == ErrorKind::Argument ? 2 : 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "repshare %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "repshare: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
