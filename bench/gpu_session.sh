#!/usr/bin/env bash
# gpu_session.sh — every GPU check and number of fusedopt in one command, for a session on a machine with
# an NVIDIA GPU (H100 / H200) and no network. Run from anywhere (it finds the repository root):
#
#   bash bench/gpu_session.sh [all|native|python]       (default: all)
#
#   native = env build ctest bench sanitizer     C++: CUDA tests, bench_sgd_cuda, compute-sanitizer
#   python = env install compare pytest-torch pytest   pip install, bench/compare_cuda.py, the Python
#                                                       suite on torch CUDA tensors
#            (numbers first in each half: the stages whose duration is least certain come last)
#   all    = both. Every stage has a time limit and the whole run a budget (BUDGET, default 560 s, under
#            the 600 s a device command may take): stages that no longer fit are skipped and listed with
#            the command that runs them. On an H100 run `native` and then `python` (two commands) when
#            `all` does not fit; a second command reuses the first one's build directories.
#
# STAGES="build bench" overrides the preset (any of: env build ctest bench sanitizer install compare
# pytest-torch pytest; "sanitizer" means one stage per SANITIZER_TOOLS entry, e.g. sanitizer-memcheck).
# Everything goes under OUT (default /tmp/fusedopt-gpu-out):
#   summary-<preset>.tsv   stage, status, seconds, log file (written as stages finish; printed at the end;
#                    <preset> is all, native, python, or "stages" when STAGES is set)
#   NN-<stage>.log   each stage's full output;  env.txt / nvidia-smi.txt: the machine
#   ctest_cuda.xml, pytest_*.xml               JUnit results
#   bench_sgd_cuda.json / .txt, bench_summary.txt   Google Benchmark JSON, console, one line per case
#   compare_cuda.json / compare_cuda.txt       the Python comparison against torch's fused CUDA SGD
# Status per stage: ok, FAIL (rc N), TIMEOUT, or SKIP (reason: a tool or the device is missing, the
# budget ran out). A failure never stops the script; it exits 1 when any stage failed or timed out.
#
# Settings (environment):
#   CUDA_ARCH=90           CMAKE_CUDA_ARCHITECTURES of the build and the pip install (H100/H200: 90)
#   BUILD_DIR=build/gpu-session   JOBS=$(nproc)   PYTHON=python3   BUDGET=560
#   CTEST_JOBS=8           parallel ctest processes on the one GPU
#   SANITIZER_TOOLS="memcheck"    compute-sanitizer tools, one stage each ("memcheck racecheck
#                          initcheck synccheck"; "" skips); SANITIZER_FILTER is the gtest filter
#                          (default: all but the >2^31-element and the 1 Mi-element cases)
#   BENCH_REPS=3           bench_sgd_cuda repetitions (interleaved); BENCH_ARGS: extra flags
#   COMPARE_ARGS           extra flags for compare_cuda.py (e.g. --quick, --no-profile)
#   FORCE_DEVICE_STAGES=1  run the device stages even when no GPU is seen (to check this script)
#   PREBUILT=1             do not build: use test_cuda_kernels / bench_sgd_cuda already in BUILD_DIR (also
#                          automatic when cmake or nvcc is missing; a build directory configured from another
#                          path runs its test binary directly instead of through ctest)
#   WHEEL=<file.whl>       install this wheel instead of building the tree with pip (no nvcc here)
#   T_<STAGE>=seconds      time limit of one stage (T_BUILD=360, T_CTEST=240, ...)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/fusedopt-gpu-out}"
BUILD_DIR="${BUILD_DIR:-build/gpu-session}"
case "$BUILD_DIR" in /*) B="$BUILD_DIR" ;; *) B="$root/$BUILD_DIR" ;; esac
CUDA_ARCH="${CUDA_ARCH:-90}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 4)}"
PY="${PYTHON:-python3}"
BUDGET="${BUDGET:-560}"
CTEST_JOBS="${CTEST_JOBS:-8}"
SANITIZER_TOOLS="${SANITIZER_TOOLS-memcheck}"
SANITIZER_FILTER="${SANITIZER_FILTER:--*MoreThan2To31Elements*:*_n1048581_*}"
BENCH_REPS="${BENCH_REPS:-3}"
export OUT B CUDA_ARCH JOBS PY CTEST_JOBS SANITIZER_FILTER BENCH_REPS root

# nvcc and compute-sanitizer are often installed but not on PATH.
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  if [[ -n "$d" && -d "$d/bin" && ":$PATH:" != *":$d/bin:"* ]]; then PATH="$PATH:$d/bin"; fi
done
export PATH

have() { command -v "$1" >/dev/null 2>&1; }

# A GPU is there when nvidia-smi lists one, or (without nvidia-smi) when the device node exists.
have_device() {
  if [[ "${FORCE_DEVICE_STAGES:-0}" == 1 ]]; then return 0; fi
  if have nvidia-smi; then nvidia-smi -L 2>/dev/null | grep -q '^GPU '; return; fi
  [[ -e /dev/nvidia0 ]]
}

# torch sees a CUDA device and fusedopt (installed) can use it; prints why not otherwise.
python_cuda_ready() {
  (cd /tmp && "$PY" - <<'EOF'
import sys
try:
    import torch
except ImportError:
    print("torch is not installed"); sys.exit(1)
if not torch.cuda.is_available():
    print(f"torch {torch.__version__} sees no CUDA device"); sys.exit(1)
try:
    import fusedopt
except ImportError as e:
    print(f"fusedopt is not importable ({e})"); sys.exit(1)
if not fusedopt.cuda.is_available():
    print("fusedopt cannot use the GPU (built_with_cuda=%s)" % fusedopt.cuda.built_with_cuda()); sys.exit(1)
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}; fusedopt {fusedopt.__file__}")
EOF
  )
}

find_exe() { find "$B" -name "$1" -type f -perm -u+x 2>/dev/null | head -n 1; }

# ---------------------------------------------------------------------------------------------------
# Stages. Each runs in its own process (bash gpu_session.sh --stage NAME) under `timeout`, with its
# output in its own log. Exit 0 = ok, 77 = skipped (the reason is the last line), anything else = FAIL.

skip() { echo "SKIP: $*"; exit 77; }

stage_env() {
  {
    echo "date: $(date -Is)"
    echo "host: $(uname -a)"
    echo "repository: $root (commit $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown))"
    git -C "$root" status --short 2>/dev/null | head -n 40 | sed 's/^/  /'
    echo "CPUs: $(nproc 2>/dev/null); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null)"
    echo "settings: OUT=$OUT B=$B CUDA_ARCH=$CUDA_ARCH JOBS=$JOBS PY=$PY BUDGET=$BUDGET CTEST_JOBS=$CTEST_JOBS"
    echo "          SANITIZER_TOOLS='$SANITIZER_TOOLS' SANITIZER_FILTER='$SANITIZER_FILTER' BENCH_REPS=$BENCH_REPS"
    echo "          PREBUILT=${PREBUILT:-0} WHEEL=${WHEEL:-} FORCE_DEVICE_STAGES=${FORCE_DEVICE_STAGES:-0}"
    echo "tools:"
    for t in cmake ninja make g++ c++ nvcc compute-sanitizer nvidia-smi git "$PY"; do
      if have "$t"; then printf '  %-18s %s\n' "$t" "$(command -v "$t")"; else printf '  %-18s MISSING\n' "$t"; fi
    done
    have cmake && echo "  $(cmake --version | head -n 1)"
    have nvcc && echo "  nvcc: $(nvcc --version | tail -n 1)"
    have g++ && echo "  $(g++ --version | head -n 1)"
    if have "$PY"; then
      echo "python: $("$PY" --version 2>&1)"
      (cd /tmp && "$PY" - <<'EOF'
import importlib
for m in ("torch", "numpy", "ml_dtypes", "pytest", "scikit_build_core", "pybind11", "cupy", "fusedopt"):
    try:
        mod = importlib.import_module(m)
        extra = ""
        if m == "torch":
            extra = f" (CUDA {mod.version.cuda}, is_available={mod.cuda.is_available()})"
        if m == "fusedopt":
            extra = f" at {mod.__file__} (built_with_cuda={mod.cuda.built_with_cuda()}, devices={mod.cuda.device_count()})"
        print(f"  {m:18s} {getattr(mod, '__version__', '?')}{extra}")
    except Exception as e:
        print(f"  {m:18s} MISSING ({type(e).__name__}: {e})")
EOF
      )
    fi
  } 2>&1 | tee "$OUT/env.txt"
  if have nvidia-smi; then
    { nvidia-smi; echo; nvidia-smi -L; echo; nvidia-smi -q -d CLOCK,MEMORY,POWER,PERFORMANCE; } >"$OUT/nvidia-smi.txt" 2>&1
    head -n 20 "$OUT/nvidia-smi.txt"
  else
    echo "nvidia-smi: MISSING" | tee "$OUT/nvidia-smi.txt"
  fi
  if have_device; then echo "CUDA device: yes"; else echo "CUDA device: NO (device stages will be skipped)"; fi
}

# Which of GoogleTest / Google Benchmark CMake can find here (a throw-away probe project).
probe_packages() {
  local p
  p="$(mktemp -d)"
  cat >"$p/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(fusedopt_probe CXX)
find_package(GTest QUIET)
find_package(benchmark QUIET)
set(g OFF)
set(b OFF)
if(TARGET GTest::gtest_main OR TARGET GTest::Main)
  set(g ON)
endif()
if(TARGET benchmark::benchmark)
  set(b ON)
endif()
message(STATUS "PROBE tests=${g} bench=${b}")
EOF
  cmake -S "$p" -B "$p/b" 2>&1 | sed -n 's/.*PROBE //p'
  rm -rf "$p"
}

# True when $B was configured from this very source tree (a build directory carried from another machine
# keeps the other tree's absolute paths: its binaries run, its ctest files do not).
build_is_ours() {
  [[ -f "$B/CMakeCache.txt" ]] && grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$B/CMakeCache.txt"
}

prebuilt_note() {
  local t b
  t="$(find_exe test_cuda_kernels)"
  b="$(find_exe bench_sgd_cuda)"
  [[ -n "$t$b" ]] || return 1
  echo "using prebuilt binaries in $B: ${t:-no test_cuda_kernels} ${b:-no bench_sgd_cuda}"
}

stage_build() {
  if [[ "${PREBUILT:-0}" == 1 ]]; then
    prebuilt_note || { echo "PREBUILT=1 but no binaries under $B"; exit 1; }
    skip "PREBUILT=1: not building"
  fi
  if ! have cmake || ! have nvcc; then
    local missing="cmake"
    have cmake && missing="nvcc (looked on PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
    prebuilt_note && skip "$missing not found; the prebuilt binaries in $B are used"
    skip "$missing not found and no prebuilt binaries in $B"
  fi
  if [[ -f "$B/CMakeCache.txt" ]] && ! build_is_ours; then
    echo "$B was configured from another source tree ($(grep '^CMAKE_HOME_DIRECTORY' "$B/CMakeCache.txt")): rebuilding it from scratch"
    rm -rf "$B"
  fi
  local probe tests bench gen
  probe="$(probe_packages)"
  tests="$(sed -n 's/.*tests=\([A-Z]*\).*/\1/p' <<<"$probe")"
  bench="$(sed -n 's/.*bench=\([A-Z]*\).*/\1/p' <<<"$probe")"
  tests="${tests:-OFF}"
  bench="${bench:-OFF}"
  echo "GoogleTest: $tests (C++ CUDA tests), Google Benchmark: $bench (bench_sgd_cuda)"
  [[ "$tests" == ON ]] || echo "WARNING: GoogleTest not found: test_cuda_kernels is not built (ctest and sanitizer stages will skip)"
  [[ "$bench" == ON ]] || echo "WARNING: Google Benchmark not found: bench_sgd_cuda is not built (bench stage will skip)"
  if have ninja; then gen=Ninja; else gen="Unix Makefiles"; fi
  set -x
  cmake -S "$root" -B "$B" -G "$gen" -DCMAKE_BUILD_TYPE=Release -DFUSEDOPT_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH" "-DFUSEDOPT_BUILD_TESTS=$tests" "-DFUSEDOPT_BUILD_BENCH=$bench" \
    -DFUSEDOPT_BUILD_PYTHON=OFF || exit 1
  set +x
  local targets=(fusedopt)
  [[ "$tests" == ON ]] && targets+=(test_cuda_kernels)
  [[ "$bench" == ON ]] && targets+=(bench_sgd_cuda)
  echo "building: ${targets[*]} (-j $JOBS)"
  cmake --build "$B" -j "$JOBS" --target "${targets[@]}" || exit 1
}

stage_ctest() {
  have_device || skip "no CUDA device"
  [[ -n "$(find_exe test_cuda_kernels)" ]] || skip "test_cuda_kernels was not built (build stage: GoogleTest missing or build failed)"
  if have ctest && build_is_ours; then
    # The CUDA tests are registered as cuda.<suite>.<test> (cuda/CMakeLists.txt: TEST_PREFIX "cuda.").
    ctest --test-dir "$B" -R '^cuda\.' --output-on-failure -j "$CTEST_JOBS" --timeout 300 \
      --output-junit "$OUT/ctest_cuda.xml"
  else
    # No ctest, or a build directory from another tree (prebuilt): the same tests in one process.
    echo "ctest unusable here (missing, or $B was configured elsewhere): running test_cuda_kernels directly"
    "$(find_exe test_cuda_kernels)" "--gtest_output=xml:$OUT/test_cuda_kernels.xml"
  fi
}

stage_sanitizer() {  # $1 = tool
  local tool="$1" exe cs
  have_device || skip "no CUDA device"
  exe="$(find_exe test_cuda_kernels)"
  [[ -n "$exe" ]] || skip "test_cuda_kernels was not built"
  cs="$(command -v compute-sanitizer || true)"
  [[ -n "$cs" ]] || skip "compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
  echo "$cs --tool $tool on $exe --gtest_filter='$SANITIZER_FILTER'"
  local t0=$SECONDS
  "$cs" --tool "$tool" --error-exitcode 99 --print-limit 50 "$exe" "--gtest_filter=$SANITIZER_FILTER"
  local rc=$?
  echo "compute-sanitizer --tool $tool: exit $rc after $((SECONDS - t0)) s"
  return $rc
}

stage_bench() {
  have_device || skip "no CUDA device"
  local exe
  exe="$(find_exe bench_sgd_cuda)"
  [[ -n "$exe" ]] || skip "bench_sgd_cuda was not built (build stage: Google Benchmark missing or build failed)"
  local agg=()
  if [[ "$BENCH_REPS" -gt 1 ]]; then
    agg=("--benchmark_repetitions=$BENCH_REPS" --benchmark_enable_random_interleaving=true
         --benchmark_report_aggregates_only=true)
  fi
  rm -f "$OUT/bench_sgd_cuda.json"
  # shellcheck disable=SC2086
  FUSEDOPT_PARAM_SHAPES="${FUSEDOPT_PARAM_SHAPES:-$root/bench/param_shapes.json}" \
    "$exe" ${agg[@]+"${agg[@]}"} --benchmark_counters_tabular=true \
    "--benchmark_out=$OUT/bench_sgd_cuda.json" --benchmark_out_format=json ${BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/bench_sgd_cuda.txt"
  local rc=${PIPESTATUS[0]}
  [[ $rc -eq 0 ]] || return "$rc"
  if [[ ! -s "$OUT/bench_sgd_cuda.json" ]]; then
    grep -q 'no CUDA device' "$OUT/bench_sgd_cuda.txt" && skip "bench_sgd_cuda sees no CUDA device"
    echo "no JSON written"
    return 1
  fi
  if have "$PY"; then
    "$PY" - "$OUT/bench_sgd_cuda.json" >"$OUT/bench_summary.txt" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
ctx = doc.get("context", {})
print(f"{ctx.get('cuda_device', '?')}  copy {ctx.get('copy_GBps', '?')}  peak {ctx.get('cuda_peak_GBps', '?')}")
print(f"{'benchmark':78s} {'us/step':>9s} {'GB/s':>8s} {'x_copy':>7s} {'launch':>6s} {'host/gpu':>8s}")
errors = 0
for b in doc.get("benchmarks", []):
    if b.get("error_occurred"):
        errors += 1
        print(f"{b['name']:78s} ERROR: {b.get('error_message', '')}")
        continue
    if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
        continue
    def c(k, f):
        v = b.get(k)
        return format(v, f) if isinstance(v, (int, float)) else "-"
    print(f"{b['name']:78s} {c('us_per_step', '9.1f')} {c('GBps', '8.1f')} {c('x_copy', '7.3f')} "
          f"{c('launches', '6.0f')} {c('host_over_gpu', '8.3f')}")
sys.exit(1 if errors else 0)
EOF
    rc=$?
    cat "$OUT/bench_summary.txt"
    [[ $rc -eq 0 ]] || { echo "bench_sgd_cuda reported benchmark errors"; return 1; }
  fi
  if grep -q '"error_occurred": true' "$OUT/bench_sgd_cuda.json"; then
    echo "bench_sgd_cuda reported benchmark errors"
    return 1
  fi
}

stage_install() {
  # Only for the device stages after it; without a GPU it would only replace the installed package.
  have_device || skip "no CUDA device (every stage that needs the install would skip)"
  have "$PY" || skip "$PY not found"
  rm -f "$OUT/.installed"
  if [[ -n "${WHEEL:-}" ]]; then  # a wheel built elsewhere (FUSEDOPT_CUDA=ON pip wheel ...), carried here
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install --no-deps --no-index --force-reinstall "$WHEEL" || exit 1
    (cd /tmp && "$PY" -c "import fusedopt; print('installed', fusedopt.__file__, 'built_with_cuda', fusedopt.cuda.built_with_cuda(), 'devices', fusedopt.cuda.device_count())") || exit 1
    echo "$WHEEL" >"$OUT/.installed"
    return 0
  fi
  have nvcc || skip "nvcc not found: a pip install would build fusedopt without CUDA (WHEEL=<file> installs a wheel instead)"
  if ! (cd /tmp && "$PY" -c "import scikit_build_core, pybind11" 2>/dev/null); then
    skip "scikit-build-core or pybind11 is not installed (pip install --no-build-isolation needs both; no network here)"
  fi
  # FUSEDOPT_CUDA=ON: fail rather than silently build without CUDA. No index, no dependencies: offline.
  # PIP_BREAK_SYSTEM_PACKAGES: a system Python (PEP 668) on a throw-away machine.
  (cd "$root" && FUSEDOPT_CUDA=ON FUSEDOPT_CUDA_ARCHITECTURES="$CUDA_ARCH" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install --no-build-isolation --no-deps --no-index . ) || exit 1
  (cd /tmp && "$PY" -c "import fusedopt; print('installed', fusedopt.__file__, 'built_with_cuda', fusedopt.cuda.built_with_cuda(), 'devices', fusedopt.cuda.device_count())") || exit 1
  echo "$root" >"$OUT/.installed"
}

# The Python stages test whatever fusedopt is installed: say so when it was not installed from this tree
# by this session (an older package from the machine's image would be measured instead).
install_note() {
  if [[ -f "$OUT/.installed" ]]; then
    echo "fusedopt installed by the install stage from $(cat "$OUT/.installed")"
  else
    echo "WARNING: the install stage did not install fusedopt in this session (OUT=$OUT): the Python stages use"
    echo "WARNING: the fusedopt already installed on this machine, which may not be this tree's code"
  fi
}

stage_pytest() {
  have_device || skip "no CUDA device"
  local why
  why="$(python_cuda_ready)" || skip "$why"
  echo "$why"
  install_note
  (cd /tmp && "$PY" -c "import pytest") || skip "pytest is not installed"
  # The whole suite, assertions unchanged, with every kernel call on torch CUDA copies
  # (tests/python/conftest.py, FUSEDOPT_TEST_ARRAY_LIBRARY=torch-cuda).
  cd "$root/tests/python" && FUSEDOPT_TEST_REQUIRE=1 FUSEDOPT_TEST_ARRAY_LIBRARY=torch-cuda \
    "$PY" -m pytest -q -p no:cacheprovider -c ../../pyproject.toml --rootdir ../.. . \
    --deselect test_huge.py "--junitxml=$OUT/pytest_torch_cuda.xml"
}

stage_pytest_torch() {
  have_device || skip "no CUDA device"
  local why
  why="$(python_cuda_ready)" || skip "$why"
  echo "$why"
  install_note
  (cd /tmp && "$PY" -c "import pytest") || skip "pytest is not installed"
  # torch / DLPack specifics; they run on CUDA too when a GPU is present.
  cd "$root/tests/python" && FUSEDOPT_TEST_REQUIRE=1 \
    "$PY" -m pytest -q -p no:cacheprovider -c ../../pyproject.toml --rootdir ../.. \
    test_torch.py test_dlpack.py "--junitxml=$OUT/pytest_torch_dlpack.xml"
}

stage_compare() {
  have_device || skip "no CUDA device"
  have "$PY" || skip "$PY not found"
  install_note
  local rc
  # shellcheck disable=SC2086
  (cd "$root" && "$PY" bench/compare_cuda.py --json "$OUT/compare_cuda.json" ${COMPARE_ARGS:-}) \
    | tee "$OUT/compare_cuda.txt"
  rc=${PIPESTATUS[0]}
  # compare_cuda.py exits 0 with a message when torch sees no GPU: that is a skip here.
  if [[ $rc -eq 0 && ! -s "$OUT/compare_cuda.json" ]]; then skip "compare_cuda.py found nothing to compare (see log)"; fi
  return "$rc"
}

if [[ "${1:-}" == "--stage" ]]; then
  shift
  mkdir -p "$OUT"
  case "$1" in
    env) stage_env ;;
    build) stage_build ;;
    ctest) stage_ctest ;;
    sanitizer-*) stage_sanitizer "${1#sanitizer-}" ;;
    bench) stage_bench ;;
    install) stage_install ;;
    pytest) stage_pytest ;;
    pytest-torch) stage_pytest_torch ;;
    compare) stage_compare ;;
    *) echo "unknown stage $1"; exit 2 ;;
  esac
  exit $?
fi

# ---------------------------------------------------------------------------------------------------
# Driver

preset="${1:-all}"
case "$preset" in
  all) default_stages="env build ctest bench sanitizer install compare pytest-torch pytest" ;;
  native) default_stages="env build ctest bench sanitizer" ;;
  python) default_stages="env install compare pytest-torch pytest" ;;
  -h | --help) sed -n '2,/^set -uo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d'; exit 0 ;;
  *) echo "gpu_session.sh: unknown preset '$preset' (all, native, python; or set STAGES)" >&2; exit 2 ;;
esac
label="$preset"
[[ -n "${STAGES:-}" ]] && label=stages
STAGES="${STAGES:-$default_stages}"

# "sanitizer" expands to one stage per tool.
stages=()
for s in $STAGES; do
  if [[ "$s" == sanitizer ]]; then
    for t in $SANITIZER_TOOLS; do stages+=("sanitizer-$t"); done
  else
    stages+=("$s")
  fi
done

limit_of() {
  case "$1" in
    env) echo "${T_ENV:-60}" ;;
    build) echo "${T_BUILD:-360}" ;;
    ctest) echo "${T_CTEST:-240}" ;;
    sanitizer-*) echo "${T_SANITIZER:-180}" ;;
    bench) echo "${T_BENCH:-240}" ;;
    install) echo "${T_INSTALL:-360}" ;;
    pytest) echo "${T_PYTEST:-300}" ;;
    pytest-torch) echo "${T_PYTEST_TORCH:-120}" ;;
    compare) echo "${T_COMPARE:-240}" ;;
    *) echo 60 ;;
  esac
}

mkdir -p "$OUT"
summary="$OUT/summary-$label.tsv"  # one per preset: `native` then `python` into one OUT keeps both
printf 'stage\tstatus\tseconds\tlog\n' >"$summary"
echo "gpu_session.sh: stages: ${stages[*]}; output in $OUT; budget ${BUDGET} s"
start=$SECONDS
failed=0
left_out=()
n=0
for s in "${stages[@]}"; do
  n=$((n + 1))
  log="$OUT/$(printf '%02d' "$n")-$s.log"
  remaining=$((BUDGET - (SECONDS - start)))
  limit="$(limit_of "$s")"
  if ((remaining < 30)); then
    status="SKIP (out of the ${BUDGET} s budget)"
    left_out+=("$s")
    printf '%s\t%s\t%s\t%s\n' "$s" "$status" 0 "-" >>"$summary"
    echo "== $s: $status"
    continue
  fi
  ((limit > remaining)) && limit=$remaining
  echo "== $s (limit ${limit} s) -> $log"
  t0=$SECONDS
  timeout -k 10 "$limit" bash "${BASH_SOURCE[0]}" --stage "$s" >"$log" 2>&1
  rc=$?
  secs=$((SECONDS - t0))
  case $rc in
    0) status="ok" ;;
    77) status="SKIP ($(grep '^SKIP: ' "$log" | tail -n 1 | cut -c7-))" ;;
    124 | 137) status="TIMEOUT (${limit} s)"; failed=1 ;;
    *) status="FAIL (rc $rc)"; failed=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$s" "$status" "$secs" "$(basename "$log")" >>"$summary"
  echo "   $status, ${secs} s"
  if [[ "$status" != ok && "$status" != SKIP* ]]; then
    echo "   --- last 25 lines of $log:"
    tail -n 25 "$log" | sed 's/^/   | /'
  fi
  if [[ "$s" == bench && -s "$OUT/bench_summary.txt" ]]; then sed 's/^/   | /' "$OUT/bench_summary.txt"; fi
  if [[ "$s" == compare && -s "$OUT/compare_cuda.txt" ]]; then tail -n 45 "$OUT/compare_cuda.txt" | sed 's/^/   | /'; fi
done

echo
echo "gpu_session.sh: summary ($((SECONDS - start)) s), $summary:"
column -t -s $'\t' "$summary" 2>/dev/null || cat "$summary"
if ((${#left_out[@]} > 0)); then
  echo "not run for lack of time; run them with:  STAGES=\"${left_out[*]}\" bash bench/gpu_session.sh"
fi
exit $failed
