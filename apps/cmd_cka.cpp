// repshare cka X.npy Y.npy: linear CKA of two feature files over the same examples.
#include <cmath>
#include <cstdio>

#include "apps/app_util.h"
#include "apps/args.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "loaders/npy.h"
#include "merge/cka.h"

namespace repshare {
namespace {

const char kUsage[] =
    "usage: repshare cka X.npy Y.npy [--estimator biased|unbiased] [--batch-size B]\n"
    "                    [--memory-mb M] [--json] [--backend cpu|cuda]\n"
    "\n"
    "Linear CKA between two representations of the same N examples. Each file is a\n"
    "C-order float32 or float64 .npy of shape (N, ...); each row is flattened. The\n"
    "files are streamed by column blocks, never loaded whole.\n"
    "\n"
    "  --estimator E    biased (Kornblith et al. 2019, default) or unbiased (Song et al.)\n"
    "  --batch-size B   minibatch unbiased CKA over batches of B >= 4 examples\n"
    "                   (implies --estimator unbiased)\n"
    "  --memory-mb M    features held per column block (default 64)\n"
    "  --json           print {\"cka\": S, \"estimator\": E, \"n\": N[, \"batch_size\": B]}\n"
    "  --backend B      where the float64 Gram products run: cpu (OpenBLAS, default) or\n"
    "                   cuda (cuBLAS); --threads N sets the CPU threads\n";

}  // namespace

int cmd_cka(const CommandArgs& argv) {
  Args args(argv, {"json", "help"});
  if (args.flag("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string estimator = args.get("estimator", "");
  const int batch_size = args.get_int("batch-size", 0);
  const int memory_mb = args.get_int("memory-mb", 64);
  const bool json = args.flag("json");
  auto backend = backend_from_args(args);
  args.finish();
  check(args.positionals().size() == 2, ErrorKind::Argument,
        "expected two feature files (X.npy Y.npy), got ", args.positionals().size(), "\n",
        kUsage);
  check(batch_size >= 0, ErrorKind::Argument, "--batch-size must be positive, got ", batch_size);
  check(memory_mb > 0, ErrorKind::Argument, "--memory-mb must be positive, got ", memory_mb);

  CkaOptions options;
  options.batch_size = static_cast<size_t>(batch_size);
  if (estimator == "unbiased" || (estimator.empty() && batch_size > 0)) {
    options.estimator = CkaEstimator::Unbiased;
  } else if (estimator == "biased" || estimator.empty()) {
    check(batch_size == 0, ErrorKind::Argument,
          "--batch-size needs the unbiased estimator (minibatch CKA averages HSIC1)");
  } else {
    fail(ErrorKind::Argument, "--estimator must be biased or unbiased, got '", estimator, "'");
  }

  const std::string& x_path = args.positionals()[0];
  const std::string& y_path = args.positionals()[1];
  NpyReader x(x_path), y(y_path);
  check(x.rows() == y.rows(), ErrorKind::Shape, "CKA compares the same examples, but ", x_path,
        " has ", x.rows(), " rows and ", y_path, " has ", y.rows());
  check(x.cols() > 0 && y.cols() > 0, ErrorKind::Shape, "no features per example in ",
        x.cols() == 0 ? x_path : y_path);
  const size_t memory = static_cast<size_t>(memory_mb) << 20;
  const double s =
      cka(centered_gram(x, *backend, memory), centered_gram(y, *backend, memory), options);
  check(!std::isnan(s), ErrorKind::Shape, "CKA is undefined: the self-similarity HSIC of ",
        x_path, " or ", y_path,
        " is not positive (constant features, or an unbiased estimate <= 0 at this n)");

  const char* name = cka_estimator_name(options.estimator);
  if (json) {
    std::printf("{\"cka\": %.17g, \"estimator\": \"%s\", \"n\": %zu", s, name, x.rows());
    if (options.batch_size) std::printf(", \"batch_size\": %zu", options.batch_size);
    std::printf("}\n");
  } else {
    std::printf("%.9f\n", s);
  }
  return 0;
}

}  // namespace repshare
