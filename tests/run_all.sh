#!/usr/bin/env bash
# Runs every fusedopt test on this machine: installs the package (pip, scikit-build-core), builds and
# runs the C++ tests (ctest), runs the Python suite against the installed package once per CPU
# capability this CPU supports and once more per array library (torch views and CPU copies; torch
# CUDA and CuPy copies when a GPU is present), runs the Ray tests once as their own stage (skipped
# with a message when Ray is not installed), and, with FUSEDOPT_TEST_BENCH=ON (as .ci/run sets),
# builds and smoke-runs the benchmark binaries; it says so when it skips any of these.
# Needs: CMake, a C++17 compiler, GoogleTest (libgtest-dev); Google Benchmark (libbenchmark-dev) for
# the benchmark smoke run. Uses Ninja when it is on PATH, else CMake's default generator.
# Usage: bash tests/run_all.sh        (from anywhere; uses the python3 on PATH)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
jobs="${FUSEDOPT_JOBS:-$(nproc)}"
build="${FUSEDOPT_TEST_BUILD_DIR:-$root/build/tests}"
bench="${FUSEDOPT_TEST_BENCH:-OFF}"
if command -v ninja >/dev/null 2>&1; then
  gen=(-G Ninja)
else
  gen=()
  echo "-- ninja is not on PATH: using CMake's default generator"
fi

echo "== install fusedopt (Python package) =="
"$py" -m pip install -q "$root[test]"

echo "== C++ tests (ctest) =="
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DFUSEDOPT_BUILD_TESTS=ON \
  -DFUSEDOPT_BUILD_BENCH="$bench" >/dev/null
cmake --build "$build" -j "$jobs"
if ! ctest --test-dir "$build" -N | grep -q "Total Tests: [1-9]"; then
  echo "error: no C++ tests were built: GoogleTest was not found (apt-get install libgtest-dev)" >&2
  exit 1
fi
# Tests that call GTEST_SKIP (the CUDA tests without a GPU) are marked Skipped by ctest; its summary
# line counts them among the passed, so the number that did not run is printed after it.
ctest_log="$build/ctest-output.txt"
ctest --test-dir "$build" --output-on-failure -j "$jobs" | tee "$ctest_log"
skipped="$(grep -c '\*\*\*Skipped' "$ctest_log" || true)"
echo "ctest: $skipped of the tests above did not run (Skipped: CUDA tests without a CUDA device, or GTEST_SKIP)"

echo "== Python tests (pytest, once per CPU capability) =="
caps="$(cd /tmp && "$py" -c 'import fusedopt; print(" ".join(fusedopt.supported_cpu_capabilities()))')"
for cap in $caps; do
  echo "-- FUSEDOPT_CPU_CAPABILITY=$cap"
  # Run from outside the source tree so the installed package is what gets imported.
  (cd "$root/tests/python" && FUSEDOPT_TEST_REQUIRE=1 FUSEDOPT_CPU_CAPABILITY="$cap" \
     "$py" -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root" -m "not ray" .)
done

# The suite once more per array library: every kernel call receives that library's arrays instead
# of the test's NumPy arrays (FUSEDOPT_TEST_ARRAY_LIBRARY, tests/python/conftest.py).
library_pass() {
  echo "-- FUSEDOPT_TEST_ARRAY_LIBRARY=$1 ($2)"
  (cd "$root/tests/python" && FUSEDOPT_TEST_REQUIRE=1 FUSEDOPT_TEST_ARRAY_LIBRARY="$1" \
     "$py" -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root" -m "not ray" . \
     --deselect test_huge.py)
}
if (cd /tmp && "$py" -c "import torch" 2>/dev/null); then
  library_pass torch "every kernel call through torch views / DLPack"
  library_pass torch-copy "every kernel call on torch CPU copies, copied back: the CUDA passes' machinery"
else
  echo "-- torch is not installed: the torch / DLPack passes are skipped (pip install torch)"
fi
if (cd /tmp && "$py" -c 'import sys, torch, fusedopt
sys.exit(0 if torch.cuda.is_available() and fusedopt.cuda.is_available() else 1)' 2>/dev/null); then
  library_pass torch-cuda "every kernel call on torch CUDA copies"
else
  echo "-- FUSEDOPT_TEST_ARRAY_LIBRARY=torch-cuda skipped: torch and fusedopt see no CUDA device"
fi
if (cd /tmp && "$py" -c 'import sys, cupy, fusedopt
sys.exit(0 if cupy.cuda.is_available() and fusedopt.cuda.is_available() else 1)' 2>/dev/null); then
  library_pass cupy "every kernel call on CuPy copies"
else
  echo "-- FUSEDOPT_TEST_ARRAY_LIBRARY=cupy skipped: CuPy is not installed or it and fusedopt see no CUDA device"
fi

# Ray stage: RayParameterServer, workers, fault tolerance, a two-node cluster. Nothing global is
# started here: each test module starts and stops its own Ray (bounded in time).
echo "== Ray tests (pytest -m ray: each module starts and stops its own local Ray) =="
# From /, not /tmp: Ray's session directory /tmp/ray would import as an empty 'ray' package.
if (cd / && "$py" -c "import ray.util" 2>/dev/null); then
  (cd "$root/tests/python" && FUSEDOPT_TEST_REQUIRE=1 \
     "$py" -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root" -m ray .)
else
  echo "-- skipped: Ray is not installed (pip install \"$root[distributed]\")"
fi

if (cd /tmp && "$py" -c "import atheris" 2>/dev/null); then
  secs="${FUSEDOPT_FUZZ_SECONDS:-15}"
  echo "== fuzzing (atheris, ${secs}s per target) =="
  for target in "$root"/tests/fuzz/fuzz_*.py; do
    echo "-- $(basename "$target")"
    (cd /tmp && PYTHONWARNINGS=ignore "$py" "$target" -max_total_time="$secs" -rss_limit_mb=4096 2>&1 | tail -n 2)
    # libFuzzer exits non-zero on a crash or failed assertion; pipefail propagates it.
  done
else
  echo "== fuzzing skipped: atheris is not installed (pip install atheris) =="
fi

echo "== C++ package: find_package(fusedopt) from an installed tree (consumer, examples/cpp) and the wheel =="
prefix="$build/install-prefix"
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S "$root/tests/cmake_consumer" -B "$build/consumer-tree" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build/consumer-tree"
"$build/consumer-tree/consumer"
cmake -S "$root/examples/cpp" -B "$build/example" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build/example"
"$build/example/logistic_regression"
wheel_cmake="$(cd /tmp && "$py" -c 'import fusedopt; print(fusedopt.get_cmake_dir())')"
cmake -S "$root/tests/cmake_consumer" -B "$build/consumer-wheel" "${gen[@]}" -Dfusedopt_DIR="$wheel_cmake" >/dev/null
cmake --build "$build/consumer-wheel"
"$build/consumer-wheel/consumer"

if [ "$bench" != "ON" ]; then
  echo "== benchmark smoke run skipped: FUSEDOPT_TEST_BENCH is $bench (set FUSEDOPT_TEST_BENCH=ON; needs libbenchmark-dev) =="
elif [ -x "$build/bench/bench_sgd_cpu" ] && [ -f "$root/bench/run_smoke.sh" ]; then
  echo "== benchmark smoke run =="
  bash "$root/bench/run_smoke.sh" "$build"
else
  echo "error: FUSEDOPT_TEST_BENCH=ON but $build/bench/bench_sgd_cpu was not built" >&2
  exit 1
fi
echo "== all tests passed =="
