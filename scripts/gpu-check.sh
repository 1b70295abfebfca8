#!/usr/bin/env bash
# One-shot check on a machine with an NVIDIA GPU and no internet:
#
#   scripts/gpu-check.sh OUTDIR        # from the repo root
#
# Builds Release for the detected GPU architecture, runs the CPU-vs-CUDA op
# comparison (tests/test_backend_ops.cpp), the same under compute-sanitizer, and
# the whole test suite; writes OUTDIR/report.md and OUTDIR/report.json (GPU,
# driver, CUDA, per-step status and time, test counts and failures) plus
# steps.log (each step's output tail): three files (the device tool brings back at
# most 8; the gtest XML files stay in the work folder, summarised in the report).
#
# Every step runs under `timeout`, inside an overall budget (GPU_CHECK_BUDGET_S,
# default 450 s, for a slot of a few minutes); a failing or hung step is recorded
# and the next one still runs. Build dependencies missing on the machine
# (protobuf, OpenBLAS, GoogleTest, ...) are taken from .gpu/deps, unpacked from
# .gpu/deps.tar.xz that scripts/prepare-gpu-deps.sh makes on the dev machine.
#
# To add a step: one `step NAME LIMIT_S command...` line in the steps section.
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: scripts/gpu-check.sh OUTDIR" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$repo"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
budget=${GPU_CHECK_BUDGET_S:-450}
started=$(date +%s)
build=${GPU_CHECK_BUILD_DIR:-build-gpu}
jobs=$(nproc)
log="$out/steps.log"
: >"$log"
: >"$work/steps.tsv"
: >"$work/facts.tsv"

fact() { printf '%s\t%s\n' "$1" "$2" >>"$work/facts.tsv"; }

# step NAME LIMIT_S command...: runs the command with stdout+stderr captured,
# killed after min(LIMIT_S, what is left of the budget); records the outcome.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - ($(date +%s) - started)))
  if [ "$left" -lt 15 ]; then
    printf '%s\tskipped\t0\t%s\tbudget spent\n' "$name" "$limit" >>"$work/steps.tsv"
    echo "=== $name: skipped (budget spent)" >>"$log"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s): $*" >>"$log"
  local t0 rc status
  t0=$(date +%s%N)
  if declare -F "$1" >/dev/null; then
    # timeout runs programs, not shell functions: give the function to a child bash.
    timeout -k 10 "$limit" bash -c '"$@"' step "$@" >"$work/$name.out" 2>&1
  else
    timeout -k 10 "$limit" "$@" >"$work/$name.out" 2>&1
  fi
  rc=$?
  local ms=$((($(date +%s%N) - t0) / 1000000))
  local secs="$((ms / 1000)).$((ms % 1000 / 100))"
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  # compute-sanitizer prints each hazard where it happens, before the test log's
  # tail: its report lines come first.
  grep -m 80 '^========= ' "$work/$name.out" >>"$log"
  tail -n 120 "$work/$name.out" >>"$log"
  echo "=== $name: $status (exit $rc, ${secs}s)" >>"$log"
  printf '%s\t%s\t%s\t%s\texit %s\n' "$name" "$status" "$secs" "$limit" "$rc" >>"$work/steps.tsv"
  return $rc
}

# ---- the machine ----
if command -v nvidia-smi >/dev/null; then
  IFS=',' read -r gpu_name driver gpu_mem cap < <(nvidia-smi \
    --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | head -1)
  fact gpu "$(echo "$gpu_name" | xargs)"
  fact driver "$(echo "$driver" | xargs)"
  fact gpu_memory "$(echo "$gpu_mem" | xargs)"
  fact compute_capability "$(echo "$cap" | xargs)"
  fact driver_cuda "$(nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | cut -d' ' -f3)"
  arch=$(echo "$cap" | tr -d ' .')
else
  fact gpu "none (nvidia-smi not found)"
fi
arch=${arch:-90}
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
fact nvcc "$("$nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' | cut -d' ' -f2)"
fact cuda_arch "$arch"
fact cmake "$(cmake --version 2>/dev/null | head -1 | awk '{print $3}')"
fact cxx "$(c++ --version 2>/dev/null | head -1)"
fact glibc "$(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')"
fact torch "$(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
# REPSHARE_COMMIT first: a copy of the tree can carry an older .git than its files.
fact commit "${REPSHARE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"

# ---- build dependencies: the system's, or all of .gpu/deps ----
# One prefix for all of them, so protobuf headers, protoc and library always match.
deps_missing=""
deps=""
[ -f /usr/include/google/protobuf/message.h ] && command -v protoc >/dev/null || deps_missing+=" protobuf"
{ compgen -G "/usr/lib/x86_64-linux-gnu/libopenblas.so*" >/dev/null &&
  { [ -f /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -f /usr/include/cblas.h ]; }; } ||
  deps_missing+=" openblas"
[ -f /usr/include/gtest/gtest.h ] || deps_missing+=" gtest"
[ -f /usr/include/onnx/onnx.proto ] || [ -f third_party/onnx/onnx.proto ] || deps_missing+=" onnx.proto"
[ -f /usr/include/stb/stb_image.h ] || [ -f third_party/stb/stb_image.h ] || deps_missing+=" stb"
cmake_deps=()
if [ -n "$deps_missing" ]; then
  deps="$repo/.gpu/deps"
  if [ ! -d "$deps" ] && [ -f .gpu/deps.tar.xz ]; then
    tar -C .gpu -xJf .gpu/deps.tar.xz
  fi
  if [ -d "$deps" ]; then
    lib="$deps/lib/x86_64-linux-gnu"
    cmake_deps=(-DCMAKE_PREFIX_PATH="$deps"
      -DProtobuf_PROTOC_EXECUTABLE="$deps/bin/protoc" -DProtobuf_INCLUDE_DIR="$deps/include"
      -DProtobuf_LIBRARY="$lib/libprotobuf.so" -DProtobuf_LIBRARY_RELEASE="$lib/libprotobuf.so"
      -DOPENBLAS_LIB="$lib/libopenblas.so"
      -DOPENBLAS_INCLUDE="$deps/include/x86_64-linux-gnu/openblas-pthread"
      -DONNX_PROTO="$deps/include/onnx/onnx.proto" -DSTB_INCLUDE="$deps/include/stb"
      -DGTest_DIR="$lib/cmake/GTest" -Dbenchmark_DIR="$lib/cmake/benchmark"
      -Dnlohmann_json_DIR="$deps/share/cmake/nlohmann_json")
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fact dependencies "system lacks${deps_missing}; all taken from .gpu/deps"
  else
    fact dependencies "system lacks${deps_missing} and there is no .gpu/deps(.tar.xz): run scripts/prepare-gpu-deps.sh and carry .gpu/deps.tar.xz"
  fi
else
  fact dependencies "system packages"
fi

# The op comparison alone, linked from its own object: the whole test binary
# needs every test file to build and link, and a break in an unrelated one must
# not cost the GPU check.
link_backend_tests_alone() {
  local gtest_dir=/usr/lib/x86_64-linux-gnu
  [ -n "${deps:-}" ] && [ -d "${deps:-}" ] && gtest_dir="$deps/lib/x86_64-linux-gnu"
  local protobuf openblas cuda_lib
  protobuf=$(sed -n 's/^Protobuf_LIBRARY_RELEASE:FILEPATH=//p; s/^Protobuf_LIBRARY:FILEPATH=//p' \
    "$build/CMakeCache.txt" | head -1)
  openblas=$(sed -n 's/^OPENBLAS_LIB:FILEPATH=//p' "$build/CMakeCache.txt" | head -1)
  cuda_lib=$(dirname "$(dirname "$nvcc")")/lib64
  ninja -C "$build" tests/CMakeFiles/repshare_tests.dir/test_backend_ops.cpp.o repshare_lib &&
    c++ -O2 "$build/tests/CMakeFiles/repshare_tests.dir/test_backend_ops.cpp.o" \
      -o "$build/backend_ops_tests" "$build/librepshare_lib.a" "$build/libonnx_proto.a" \
      "$gtest_dir/libgtest_main.a" "$gtest_dir/libgtest.a" "$protobuf" "$openblas" -fopenmp \
      -L"$cuda_lib" -Wl,-rpath,"$cuda_lib" -lcudart -lcublas -lpthread -ldl -lrt
}

# gtest with XML; the binary is the full suite when it linked, else the op tests alone.
run_gtest() {
  local xml=$1
  shift
  local bin="$build/tests/repshare_tests"
  [ -x "$bin" ] || bin="$build/backend_ops_tests"
  "$bin" --gtest_output=xml:"$xml_dir/$xml" "$@"
}

export -f link_backend_tests_alone run_gtest
xml_dir="$work/xml"
mkdir -p "$xml_dir"
export build out nvcc deps xml_dir

# repshare restarts itself to set this when it is unset; set it here so tools that
# wrap the binary (compute-sanitizer) see one process.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# ncu_kernel_times MODEL PRECISION: bench's two runs, kernel by kernel, under ncu (clocks
# and caches left alone, one metric: each kernel's duration);
# scripts/ncu_kernel_times.py sums the log by kernel name into the bench folder.
ncu_kernel_times() {
  # Two locals: a local's value cannot use one assigned in the same statement.
  local m=$1 precision=$2
  local log="$xml_dir/ncu_${precision}_$1.csv"
  LC_ALL=C ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum \
    --csv --log-file "$log" "$build/repshare" bench --backend cuda --precision "$precision" \
    --cuda-graphs off --model "$models/$m.onnx" --runs 1 --rounds 1 --warmup 0 &&
    python3 scripts/ncu_kernel_times.py "$log" "$bench_dir/kernels_${precision}_$m.json" \
      --model "$m" --precision "$precision"
}
export -f ncu_kernel_times

# ---- steps ----
step configure 120 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DREPSHARE_CUDA=ON -DREPSHARE_CUDA_EMU=OFF -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_CUDA_COMPILER="$nvcc" \
  "${cmake_deps[@]}"
step build 300 cmake --build "$build" -j "$jobs" -- -k 0
[ -x "$build/tests/repshare_tests" ] || step link_backend_tests_alone 120 link_backend_tests_alone
test_bin="$build/tests/repshare_tests"
[ -x "$test_bin" ] || test_bin="$build/backend_ops_tests"
# REPSHARE_CUDA_SYNC makes a faulting kernel fail the case that launched it.
export REPSHARE_CUDA_SYNC=1
step backend_ops 120 run_gtest backend_ops.xml \
  --gtest_filter='All/BackendOps.*:BackendOpsTable.*:BackendOpsContract.*:BackendRegistry.*'
if command -v compute-sanitizer >/dev/null; then
  step backend_ops_memcheck 200 compute-sanitizer --tool memcheck --error-exitcode 3 \
    --print-limit 20 "$test_bin" --gtest_filter='All/BackendOps.*'
else
  fact compute_sanitizer "not found"
fi
# Whole models and a merged plan, CUDA vs CPU (models carried in models/).
step models_cuda_vs_cpu 90 run_gtest models.xml --gtest_filter='BackendModels.*'
# The experiment REPSHARE_CUDA_POINTWISE=fused (1x1 convs as one kernel with their
# epilogue, conv2d.cu): the conv cases, the fused-vs-composed contracts and whole
# models against the CPU.
step backend_ops_fused_pw 90 env REPSHARE_CUDA_POINTWISE=fused bash -c \
  'run_gtest backend_ops_fused_pw.xml \
     --gtest_filter="All/BackendOps.*conv2d*:BackendOpsContract.*:BackendModels.*"'
unset REPSHARE_CUDA_SYNC
# The same whole models with CUDA graphs (REPSHARE_CUDA_SYNC turned them off above:
# the replay test skips under it), CKA's float64 Gram on cuBLAS, and the device
# memory the reporter predicts against cudaMemGetInfo.
step models_graphs 120 run_gtest models_graphs.xml \
  --gtest_filter='BackendModels.*:Cka.Gpu*:Memory.*'
# REPSHARE_CUDA_LIBRARY_OVERLAP=0 (one cuBLAS workspace, every GEMM after the one
# before, as on cuBLAS 10) with D0's head branches at once: whole models against the
# CPU and replay against kernel by kernel.
step models_library_ordered 90 env REPSHARE_CUDA_LIBRARY_OVERLAP=0 \
  REPSHARE_CUDA_CONCURRENCY_MEMORY=0.5 bash -c \
  'run_gtest models_library_ordered.xml --gtest_filter="BackendModels.*:Memory.*"'

# Each whole model under memcheck: two runs, no warm-up (the first step by step,
# the second recorded as a CUDA graph and replayed).
models=${REPSHARE_MODELS:-$repo/models}
bench_dir="$work/bench"
mkdir -p "$bench_dir"
export models bench_dir
for m in timm_b0_rand0 tf_efficientdet_d0_rand0; do
  if [ -f "$models/$m.onnx" ] && command -v compute-sanitizer >/dev/null; then
    step "memcheck_$m" 120 compute-sanitizer --tool memcheck --error-exitcode 3 --print-limit 20 \
      "$build/repshare" bench --backend cuda --model "$models/$m.onnx" --runs 2 --rounds 1 --warmup 0
  fi
done

# Benchmarks on this GPU, repshare and PyTorch in the same run. PyTorch packages the
# image lacks (effdet and its needs) travel as wheels in .whl/.
for m in timm_b0_rand0 tf_efficientdet_d0_rand0; do
  [ -f "$models/$m.onnx" ] || continue
  extra=()
  [ "$m" = tf_efficientdet_d0_rand0 ] && extra=(--with-postprocess)
  step "bench_repshare_$m" 90 "$build/repshare" bench --backend cuda --model "$models/$m.onnx" \
    --runs 100 --rounds 3 --json "$bench_dir/repshare_$m.json" "${extra[@]}"
  # The same without CUDA graphs: one launch per kernel.
  step "bench_repshare_nograph_$m" 60 "$build/repshare" bench --backend cuda --cuda-graphs off \
    --model "$models/$m.onnx" --runs 100 --rounds 3 --json "$bench_dir/repshare_nograph_$m.json"
  # fp16 mode: fp16 storage, fp32 arithmetic.
  step "bench_repshare_fp16_$m" 90 "$build/repshare" bench --backend cuda --precision fp16 \
    --model "$models/$m.onnx" --runs 100 --rounds 3 --json "$bench_dir/repshare_fp16_$m.json" \
    "${extra[@]}"
  # TF32 products (cuBLAS's GEMMs on tensor cores), PyTorch's default for fp32 convs:
  # B0's target is against torch.compile in that default.
  [ "$m" = timm_b0_rand0 ] &&
    step "bench_repshare_tf32_$m" 90 "$build/repshare" bench --backend cuda --precision tf32 \
      --model "$models/$m.onnx" --runs 100 --rounds 3 --json "$bench_dir/repshare_tf32_$m.json"
  # cuBLAS workspaces of 32 MiB, NVIDIA's size for Hopper, against the default 4 MiB
  # (Jetson's): cuBLAS may choose other kernels (split-K) with room for them. B0 runs
  # on one stream (32 MiB in all); D0 fp16 as its best variant below, on 10 streams.
  for precision in fp32 fp16; do
    concurrency=0
    [ "$m" = tf_efficientdet_d0_rand0 ] && { [ $precision = fp16 ] || continue; concurrency=0.05; }
    step "bench_ws32_${precision}_$m" 60 env REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB=32 \
      REPSHARE_CUDA_CONCURRENCY_MEMORY=$concurrency "$build/repshare" bench --backend cuda \
      --precision "$precision" --model "$models/$m.onnx" --runs 100 --rounds 3 \
      --json "$bench_dir/repshare_ws32_${precision}_$m.json"
  done
  # The fused-pointwise experiment, timed beside the default in the same run.
  for precision in fp32 fp16; do
    step "bench_fused_pw_${precision}_$m" 60 env REPSHARE_CUDA_POINTWISE=fused \
      "$build/repshare" bench --backend cuda --precision "$precision" --model "$models/$m.onnx" \
      --runs 100 --rounds 3 --json "$bench_dir/repshare_fusedpw_${precision}_$m.json"
  done
  # Independent steps at once (D0's ten head branches, on streams of their own, each
  # with a cuBLAS workspace so their GEMMs overlap): in fp32 that costs no arena memory
  # and is the default (emulated graph: longest chain 127 of 209 launches), timed here
  # against one stream. In fp16 overlapping them all keeps more intermediates alive
  # than the sequential plan, so by default only what fits in the sequential arena
  # overlaps (chain 168 of 210, 20.61 MiB), and here the arena may grow by 5% (chain
  # 128, 21.44 MiB; the greedy schedule gives 146 at 10%).
  if [ "$m" = tf_efficientdet_d0_rand0 ]; then
    step "bench_streams1_$m" 60 env REPSHARE_CUDA_STREAMS=1 "$build/repshare" bench \
      --backend cuda --model "$models/$m.onnx" --runs 100 --rounds 3 \
      --json "$bench_dir/repshare_streams1_$m.json"
    for pointwise in default fused small; do
      case $pointwise in fused) fusedpw=fusedpw_ ;; small) fusedpw=smallpw_ ;; *) fusedpw="" ;; esac
      step "bench_concurrent_${fusedpw}fp16_$m" 60 env REPSHARE_CUDA_CONCURRENCY_MEMORY=0.05 \
        REPSHARE_CUDA_POINTWISE=$pointwise "$build/repshare" bench --backend cuda \
        --precision fp16 --model "$models/$m.onnx" --runs 100 --rounds 3 \
        --json "$bench_dir/repshare_concurrent_${fusedpw}fp16_$m.json"
    done
    # The fused 1x1 kernel for the small 1x1 convs only (BiFPN from P4 down, its P6
    # input and P4/P5 laterals, and those head branches; emulated graph fp32 155
    # launches, longest chain 102), fp32 here, fp16 above.
    step "bench_small_pw_fp32_$m" 60 env REPSHARE_CUDA_POINTWISE=small \
      "$build/repshare" bench --backend cuda --model "$models/$m.onnx" --runs 100 --rounds 3 \
      --json "$bench_dir/repshare_smallpw_fp32_$m.json"
    # The same with one cuBLAS workspace, so every GEMM waits for the one before
    # whatever its stream (the default until 2026-11-28; emulated chains 193 and 195):
    # what the workspaces per stream buy, fp32 and fp16.
    step "bench_ordered_$m" 60 env REPSHARE_CUDA_LIBRARY_OVERLAP=0 "$build/repshare" bench \
      --backend cuda --model "$models/$m.onnx" --runs 100 --rounds 3 \
      --json "$bench_dir/repshare_ordered_$m.json"
    step "bench_ordered_fp16_$m" 60 env REPSHARE_CUDA_LIBRARY_OVERLAP=0 \
      REPSHARE_CUDA_CONCURRENCY_MEMORY=0.05 "$build/repshare" bench --backend cuda \
      --precision fp16 --model "$models/$m.onnx" --runs 100 --rounds 3 \
      --json "$bench_dir/repshare_ordered_fp16_$m.json"
  fi
  # Where the time goes, step by step, kernel by kernel (CUDA events around each step:
  # no synchronisation between steps; the 2026-11-27 reports still synchronised after
  # each, about 10 us a step), for the next round of kernel work. The JSON keeps every
  # step (the report lists the 15 slowest); D0 in fp16 (its 1 ms target) is also
  # profiled with the fused 1x1 convs, so each conv's two variants can be compared
  # shape by shape.
  for precision in fp32 fp16; do
    step "profile_${precision}_$m" 60 "$build/repshare" bench --backend cuda \
      --precision "$precision" --model "$models/$m.onnx" --runs 20 --rounds 1 --profile \
      --profile-steps 1000 --json "$bench_dir/profile_${precision}_$m.json"
  done
  [ "$m" = tf_efficientdet_d0_rand0 ] &&
    step "profile_fusedpw_fp16_$m" 60 env REPSHARE_CUDA_POINTWISE=fused "$build/repshare" bench \
      --backend cuda --precision fp16 --model "$models/$m.onnx" --runs 20 --rounds 1 --profile \
      --profile-steps 1000 --json "$bench_dir/profile_fusedpw_fp16_$m.json"
  # Every kernel of one inference, cuBLAS's own included, timed by Nsight Compute (the
  # model of each target: B0 fp32, D0 fp16). Their sum beside the CUDA graph's time
  # says how much of that time is kernels and how much the gaps between them.
  precision=fp32
  [ "$m" = tf_efficientdet_d0_rand0 ] && precision=fp16
  command -v ncu >/dev/null && step "kernels_${precision}_$m" 120 ncu_kernel_times "$m" "$precision"
done
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .whl/*.whl \
    >>"$log" 2>&1 && export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# GPU_CHECK_SKIP_TORCH=1 skips the PyTorch anchor (a quick re-check of correctness).
if [ -z "${GPU_CHECK_SKIP_TORCH:-}" ]; then
  step bench_torch_b0 200 python3 scripts/bench_torch_gpu.py --model b0 --out "$bench_dir/torch_b0.json"
  step bench_torch_d0 100 python3 scripts/bench_torch_gpu.py --model d0 --no-compile \
    --out "$bench_dir/torch_d0.json"
fi
# GPU memory: weights, activations, context and cuBLAS as `repshare mem` reports
# them, next to the device's measured growth (cudaMemGetInfo), for B0 alone and a
# D0 -> B0 plan sharing stage4.
# mem_json INPUT OUT [mem options]
mem_json() {
  local input=$1 json=$2
  shift 2
  "$build/repshare" mem --backend cuda "$@" --json "$input" >"$json"
}
export -f mem_json
if [ -f "$models/timm_b0_rand0.onnx" ]; then
  step mem_b0 60 mem_json "$models/timm_b0_rand0.onnx" "$bench_dir/mem_b0.json"
  if [ -f "$models/tf_efficientdet_d0_rand0.onnx" ]; then
    cat >"$work/plan_d0_b0.json" <<EOF
{"pipelines": [{"name": "det", "model": "$models/tf_efficientdet_d0_rand0.onnx"},
  {"name": "cls", "model": "$models/timm_b0_rand0.onnx",
   "share": {"from": "det", "donor_stage": "stage4", "receiver_stage": "stage4"}}]}
EOF
    step mem_d0_b0_plan 90 mem_json "$work/plan_d0_b0.json" "$bench_dir/mem_d0_b0_plan.json"
    step mem_d0_b0_plan_fp16 90 mem_json "$work/plan_d0_b0.json" \
      "$bench_dir/mem_d0_b0_plan_fp16.json" --precision fp16
  fi
fi
# Shared-memory races and barrier misuse in the op kernels (the CPU emulation of
# tests/cuda_emu runs each block's threads one at a time, so it cannot see races).
# racecheck_ours fails on a hazard in any kernel but cuBLAS's Hopper GEMMs (nvjet_*):
# on an H200 racecheck reported 504 hazards inside nvjet_sm90_hsh_8x64_64x16_2x1_v_bz_TNN,
# NVIDIA's fp16 GEMM, whose asynchronous copies it does not follow and which repshare
# cannot change; they are listed, not counted. (Leaving those kernels out with
# --kernel-name-exclude made the sanitizer fail with an internal error instead.)
racecheck_ours() {
  local log="$xml_dir/racecheck.out"
  compute-sanitizer --tool racecheck --print-limit 100 "$test_bin" \
    --gtest_filter='All/BackendOps.*' >"$log" 2>&1
  local rc=$?
  grep '^=========' "$log"
  [ "$rc" -ne 0 ] && return "$rc"
  grep -q 'Internal Sanitizer Error' "$log" && return 4
  local kernels others
  kernels=$(sed -n 's/.*access at \(.*\)+0x[0-9a-f]*.*/\1/p' "$log" | sort -u)
  others=$(echo "$kernels" | grep -v -e '^nvjet' -e '^$')
  [ -n "$kernels" ] && printf 'racecheck: hazards reported in:\n%s\n' "$kernels"
  [ -z "$others" ]
}
export -f racecheck_ours
export test_bin
if command -v compute-sanitizer >/dev/null; then
  step backend_ops_racecheck 120 racecheck_ours
  step backend_ops_synccheck 120 compute-sanitizer --tool synccheck --error-exitcode 3 \
    --print-limit 20 "$test_bin" --gtest_filter='All/BackendOps.*'
fi
[ -x "$build/tests/repshare_tests" ] && step all_tests 150 run_gtest all_tests.xml

# cuDNN for dense convolutions (REPSHARE_CUDNN=ON) is a second build: the convolution
# cases of the op harness and the whole models against the CPU, and what the cuDNN
# handle costs in device memory (mem reports it beside cuBLAS's). GPU_CHECK_SKIP_CUDNN=1
# skips it (with GPU_CHECK_SKIP_TORCH=1: a re-check of kernels in about half the time).
cudnn_build="$build-cudnn"
export cudnn_build
[ -z "${GPU_CHECK_SKIP_CUDNN:-}" ] &&
  step configure_cudnn 60 cmake -S . -B "$cudnn_build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DREPSHARE_CUDA=ON -DREPSHARE_CUDA_EMU=OFF -DREPSHARE_CUDNN=ON -DREPSHARE_BENCHMARKS=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_CUDA_COMPILER="$nvcc" "${cmake_deps[@]}" &&
  step build_cudnn 200 cmake --build "$cudnn_build" -j "$jobs" --target repshare repshare_tests &&
  {
    step backend_ops_cudnn 120 "$cudnn_build/tests/repshare_tests" \
      --gtest_output=xml:"$xml_dir/backend_ops_cudnn.xml" \
      --gtest_filter='All/BackendOps.*conv*:BackendModels.*:Memory.*'
    cudnn_mem_json() { "$cudnn_build/repshare" mem --backend cuda --json "$1" >"$2"; }
    export -f cudnn_mem_json
    [ -f "$models/timm_b0_rand0.onnx" ] &&
      step mem_b0_cudnn 60 cudnn_mem_json "$models/timm_b0_rand0.onnx" "$bench_dir/mem_b0_cudnn.json"
  }

# ---- report ----
skipped="${GPU_CHECK_SKIP_TORCH:+PyTorch anchor (GPU_CHECK_SKIP_TORCH)}"
skipped+="${GPU_CHECK_SKIP_CUDNN:+${skipped:+, }cuDNN build (GPU_CHECK_SKIP_CUDNN)}"
[ -n "$skipped" ] && fact skipped "$skipped"
fact elapsed_s "$(($(date +%s) - started))"
python3 - "$work/steps.tsv" "$work/facts.tsv" "$out" "$work/bench" "$xml_dir" <<'PY'
import glob, json, os, sys
import xml.etree.ElementTree as ET

steps_tsv, facts_tsv, out, bench_dir, xml_dir = sys.argv[1:6]
steps = []
for line in open(steps_tsv):
    name, status, secs, limit, note = line.rstrip("\n").split("\t")
    steps.append({"name": name, "status": status, "seconds": round(float(secs or 0), 1),
                  "limit_s": int(limit), "note": note})
facts = dict(line.rstrip("\n").split("\t", 1) for line in open(facts_tsv) if "\t" in line)

def gtest_summary(path):
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"error": f"unreadable XML: {e}"}
    s = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "seconds": 0.0, "failures": []}
    for case in root.iter("testcase"):
        s["tests"] += 1
        s["seconds"] += float(case.get("time", 0))
        name = f'{case.get("classname")}.{case.get("name")}'
        failure = case.find("failure")
        if failure is not None:
            s["failed"] += 1
            s["failures"].append({"test": name, "message": (failure.get("message") or "")[:600]})
        elif case.find("skipped") is not None or case.get("result") == "skipped":
            s["skipped"] += 1
        else:
            s["passed"] += 1
    s["seconds"] = round(s["seconds"], 2)
    return s

tests = {k: gtest_summary(os.path.join(xml_dir, f"{k}.xml"))
         for k in ("backend_ops", "models", "backend_ops_fused_pw", "models_graphs",
                   "models_library_ordered", "all_tests", "backend_ops_cudnn")}
bench = {}
for path in sorted(glob.glob(os.path.join(bench_dir, "*.json"))):
    try:
        bench[os.path.basename(path)[:-5]] = json.load(open(path))
    except ValueError as e:
        bench[os.path.basename(path)[:-5]] = {"error": str(e)}

# The CUDA issue's targets, from this run's numbers: repshare's fastest variant (the
# default, with the fused 1x1 convs, and for D0 fp16 with more steps at once)
# against PyTorch on the same GPU. Both sides time the network on an input already
# on the device (bench's network_median_ms; reports before 2026-11-28 timed repshare
# with the input's upload from host memory, which PyTorch's timing leaves out).
def median_ms(name):
    b = bench.get(name) or {}
    return b.get("network_median_ms", b.get("median_ms")) if "error" not in b else None

def fastest(*names):
    found = sorted((median_ms(n), n) for n in names if median_ms(n))
    return found[0] if found else (None, None)

def torch_ms(model, mode):
    r = (bench.get(f"torch_{model}") or {}).get("results", {}).get(mode)
    return r["median_ms"] if r else None

def target(what, ours, name, anchor_ms, anchor, limit):
    ratio = ours / anchor_ms if ours and anchor_ms else None
    return {"target": what, "repshare_ms": ours, "variant": name, "anchor": anchor,
            "anchor_ms": anchor_ms, "ratio": ratio,
            "met": None if ratio is None else ratio <= limit}

targets = []
b0 = "timm_b0_rand0"
b0_fp32 = fastest(f"repshare_{b0}", f"repshare_fusedpw_fp32_{b0}", f"repshare_ws32_fp32_{b0}")
b0_fp16 = fastest(f"repshare_fp16_{b0}", f"repshare_fusedpw_fp16_{b0}", f"repshare_ws32_fp16_{b0}")
targets.append(target("B0 fp32 <= 0.25x PyTorch eager", *b0_fp32, torch_ms("b0", "eager_fp32"),
                      "eager_fp32", 0.25))
targets.append(target("B0 fp32 <= 1.0x torch.compile reduce-overhead", *b0_fp32,
                      torch_ms("b0", "compile_fp32"), "compile_fp32", 1.0))
# PyTorch's fp32 convs run in TF32 by default; this one keeps fp32 like repshare.
targets.append(target("B0 fp32 <= 1.0x torch.compile reduce-overhead, TF32 off", *b0_fp32,
                      torch_ms("b0", "compile_fp32_strict"), "compile_fp32_strict", 1.0))
# Both sides with TF32 products (repshare --precision tf32; PyTorch's default).
targets.append(target("B0 tf32 <= 1.0x torch.compile reduce-overhead (both TF32)",
                      *fastest(f"repshare_tf32_{b0}"), torch_ms("b0", "compile_fp32"),
                      "compile_fp32", 1.0))
targets.append(target("B0 fp16 faster than B0 fp32", *b0_fp16, b0_fp32[0], "repshare fp32", 1.0))
d0 = "tf_efficientdet_d0_rand0"
d0_fp16 = fastest(f"repshare_fp16_{d0}", f"repshare_fusedpw_fp16_{d0}",
                  f"repshare_concurrent_fp16_{d0}", f"repshare_concurrent_fusedpw_fp16_{d0}",
                  f"repshare_concurrent_smallpw_fp16_{d0}", f"repshare_ws32_fp16_{d0}")
targets.append(target("D0 network fp16 < 1 ms", *d0_fp16, 1.0, "1 ms", 1.0))
report = {"machine": facts, "steps": steps, "tests": tests, "bench": bench, "targets": targets}
json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=2)

md = ["# repshare GPU check", ""]
md += [f"- **{k}**: {v}" for k, v in facts.items()]
md += ["", "| step | status | seconds | limit | note |", "| --- | --- | --- | --- | --- |"]
md += [f'| {s["name"]} | {s["status"]} | {s["seconds"]} | {s["limit_s"]} | {s["note"]} |'
       for s in steps]
for k, s in tests.items():
    md += ["", f"## {k}", ""]
    if s is None:
        md.append("not run")
        continue
    if "error" in s:
        md.append(s["error"])
        continue
    md.append(f'{s["tests"]} tests: {s["passed"]} passed, {s["failed"]} failed, '
              f'{s["skipped"]} skipped ({s["seconds"]} s)')
    for f in s["failures"][:40]:
        md.append(f'- `{f["test"]}`: {f["message"].splitlines()[0] if f["message"] else ""}')
md += ["", "## Benchmarks (batch 1, same GPU, same run)", "",
       "| what | median ms | p90 ms |", "| --- | --- | --- |"]
for name, b in bench.items():
    if name.startswith("profile_"):
        continue  # tabled below
    if name.startswith("repshare_"):
        graph = "CUDA graph" if b.get("recorded_graph") else "kernel by kernel"
        if b.get("graph_nodes"):
            graph += f' of {b["graph_nodes"]} nodes, chain {b["graph_longest_chain"]}'
        variant = (", 1x1 convs fused (experiment)" if "fusedpw_" in name else
                   ", small 1x1 convs fused (experiment)" if "smallpw_" in name else "")
        if "ordered_" in name:
            variant += ", one cuBLAS workspace: GEMMs one after another"
        if "ws32_" in name:
            variant += ", cuBLAS workspaces of 32 MiB"
        if b.get("steps"):
            at_once = b.get("longest_chain_steps", b["steps"]) < b["steps"]
            variant += (f', steps at once on {b.get("queues")} streams, arena '
                        f'{b.get("activation_arena_bytes", 0) / 2**20:.2f} MiB' if at_once
                        else ", steps in order")
        what = f'repshare {b.get("model")} {b.get("precision", "fp32")} (CUDA, {graph}{variant})'
        if "network_median_ms" in b:
            md.append(f'| {what}, network on an input on the device | {b["network_median_ms"]:.3f} | {b["network_p90_ms"]:.3f} |')
            what = f'the same with the input uploaded from host memory every run'
        md.append(f'| {what} | {b.get("median_ms", 0):.3f} | {b.get("p90_ms", 0):.3f} |')
        if b.get("recording_error"):
            md.append(f'| (recording failed: {b["recording_error"][:120]}) | | |')
        if "with_postprocess_median_ms" in b:
            md.append(f'| repshare {b.get("model")} with post-processing (top-k, decode, NMS on the GPU) | {b["with_postprocess_median_ms"]:.3f} | {b["with_postprocess_p90_ms"]:.3f} |')
            md.append(f'| repshare {b.get("model")} post-processing alone | {b["postprocess_median_ms"]:.3f} | |')
    elif name.startswith("torch_"):
        for mode, r in b.get("results", {}).items():
            md.append(f'| PyTorch {b.get("torch")} {b.get("model")} {mode} | {r["median_ms"]:.3f} | {r["p90_ms"]:.3f} |')
        for mode, e in b.get("errors", {}).items():
            md.append(f'| PyTorch {b.get("model")} {mode} | error: {e[:120]} | |')
md += ["", "## Against the targets (this run)", "",
       "| target | repshare ms (variant) | anchor ms | ratio | met |",
       "| --- | --- | --- | --- | --- |"]
for t in targets:
    ours = f'{t["repshare_ms"]:.3f} ({t["variant"]})' if t["repshare_ms"] else "not measured"
    anchor = f'{t["anchor_ms"]:.3f} ({t["anchor"]})' if t["anchor_ms"] else "not measured"
    ratio = f'{t["ratio"]:.2f}' if t["ratio"] is not None else ""
    met = {None: "", True: "yes", False: "no"}[t["met"]]
    md.append(f'| {t["target"]} | {ours} | {anchor} | {ratio} | {met} |')
for name, b in bench.items():
    if not name.startswith("profile_") or "profile_kind_ms" not in b:
        continue
    variant = ", 1x1 convs fused (experiment)" if "fusedpw_" in name else ""
    md += ["", f'## Profile: {b.get("model")} {b.get("precision")}{variant} ({b.get("profile_steps")} steps, '
               f'{b.get("profile_total_ms", 0):.3f} ms summed over the steps, kernel by kernel)', "",
           "| kind | ms per run |", "| --- | --- |"]
    for kind, ms in sorted(b["profile_kind_ms"].items(), key=lambda kv: -kv[1])[:12]:
        md.append(f"| {kind} | {ms:.3f} |")
    md += ["", "Slowest steps:", ""]
    md += [f'- {s["ms"]:.3f} ms {s["step"]}' for s in b.get("profile_slowest_steps", [])[:15]]
for name, b in bench.items():
    if not name.startswith("kernels_") or "by_kernel" not in b:
        continue
    graph = "repshare_" + ("" if b["precision"] == "fp32" else b["precision"] + "_") + b["model"]
    # bench --runs 1 runs the network twice: run(), then on an input kept on the device.
    md += ["", f'## Kernels: {b["model"]} {b["precision"]} (Nsight Compute, two runs kernel '
               f'by kernel: {b["kernels"]} kernels, {b["kernel_ms"]:.3f} ms)', ""]
    if median_ms(graph):
        md += [f'Kernel time per run is {50 * b["kernel_ms"] / median_ms(graph):.0f}% of the '
               f'CUDA graph\'s median ({median_ms(graph):.3f} ms, {graph}): ncu times each kernel '
               f'alone (caches kept), while a graph\'s kernels overlap their neighbours\' '
               f'start and end, and D0\'s branches run at once on streams.', ""]
    md += ["| kernel | launches | ms | share |", "| --- | --- | --- | --- |"]
    for k in b["by_kernel"][:20]:
        md.append(f'| {k["name"][:90]} | {k["launches"]} | {k["ms"]:.4f} | '
                  f'{100 * k["ms"] / b["kernel_ms"]:.1f}% |')
    md += ["", "Slowest launches (every launch is in report.json):", "",
           "| kernel | grid | block | us |", "| --- | --- | --- | --- |"]
    for k in sorted(b.get("launches", []), key=lambda l: -l["us"])[:20]:
        md.append(f'| {k["name"][-110:]} | {k["grid"]} | {k["block"]} | {k["us"]:.1f} |')
def mib(x):
    return f"{x / 2**20:.2f} MiB"
for name, b in bench.items():
    if not name.startswith("mem_") or "variants" not in b:
        continue
    md += ["", f"## GPU memory: {b.get('input')} ({b.get('precision', 'fp32')})", "",
           "| variant | weights | activations | host io | backend overhead | total |",
           "| --- | --- | --- | --- | --- | --- |"]
    for v in b["variants"]:
        m = v["memory"]
        over = sum(o["bytes"] for o in m.get("backend_overhead", []))
        md.append(f'| {v["name"]} | {mib(m["weights"])} | {mib(m["activations"])} | '
                  f'{mib(m["host_buffers"])} | {mib(over)} | {mib(m["total"])} |')
    for o in b["variants"][0]["memory"].get("backend_overhead", []):
        md.append(f'- {o["name"]}: {mib(o["bytes"])}')
    if "device_allocate_and_run" in b:
        md.append(f'- device memory in use grew by {mib(b["device_allocate_and_run"])} allocating '
                  f'and running the plan as written ({100 * b["device_vs_reported"]:+.1f}% vs the '
                  f'reported weights + activations, which cudaMalloc maps in whole 2 MiB pages; '
                  f'{100 * b.get("device_total_vs_reported", float("nan")):+.1f}% with the '
                  f'backend overhead, against the reported device total)')
md += ["", "Step output tails: steps.log; raw benchmark JSON in report.json."]
open(os.path.join(out, "report.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
