#!/usr/bin/env bash
# run_smoke.sh — runs every fusedopt benchmark binary once with a tiny minimum time, to prove that each
# builds, runs and reports (no timing is checked). Usage:
#   bench/run_smoke.sh [BUILD_DIR]        (default: build/bench under the repository root)
# Build first:
#   cmake -S . -B build/bench -G Ninja -DFUSEDOPT_BUILD_BENCH=ON -DFUSEDOPT_BUILD_TESTS=OFF -DFUSEDOPT_CUDA=OFF
#   ninja -C build/bench bench
# Google Benchmark changed --benchmark_min_time between releases: 1.7 (Debian 12) takes a number of
# seconds ("0.01"), 1.8+ wants a unit ("0.01s") and rejects or warns on a bare number. The script asks
# the first binary which form it accepts. Extra arguments for every binary: BENCH_SMOKE_ARGS.
# bench_sgd_cuda (CUDA builds) runs too when it was built; its pipelined cases have a fixed iteration count.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/bench}"
bindir="$build/bench"
bins=(bench_sgd_cpu bench_multi_sgd_cpu bench_dcasgd_cpu bench_row_sparse_cpu)

for b in "${bins[@]}"; do
  if [[ ! -x "$bindir/$b" ]]; then
    echo "run_smoke.sh: $bindir/$b not found; build with -DFUSEDOPT_BUILD_BENCH=ON first" >&2
    exit 2
  fi
done
# Built only with CUDA (-DFUSEDOPT_CUDA=ON/AUTO and nvcc): run it when it is there. Without a CUDA device it
# prints one line and exits 0.
if [[ -x "$bindir/bench_sgd_cuda" ]]; then
  bins+=(bench_sgd_cuda)
fi

# Probe the min_time syntax on a filter that matches nothing (no allocation, no floor measurement).
probe() { FUSEDOPT_BENCH_FLOOR_GBPS=1 "$bindir/${bins[0]}" --benchmark_filter='^$NONE' "--benchmark_min_time=$1" >/dev/null 2>&1; }
if probe 0.01s; then
  min_time=0.01s
elif probe 0.01; then
  min_time=0.01
else
  echo "run_smoke.sh: ${bins[0]} accepts neither --benchmark_min_time=0.01s nor =0.01" >&2
  exit 2
fi
echo "run_smoke.sh: --benchmark_min_time=$min_time"

# A fixed floor skips the start-up bandwidth measurement unless the caller asks for it.
export FUSEDOPT_BENCH_FLOOR_GBPS="${FUSEDOPT_BENCH_FLOOR_GBPS:-45}"
# Keep only the running case's buffers (peak memory ~1 GiB, the 64 Mi cases).
export FUSEDOPT_BENCH_CACHE_MB="${FUSEDOPT_BENCH_CACHE_MB:-0}"
export FUSEDOPT_PARAM_SHAPES="${FUSEDOPT_PARAM_SHAPES:-$root/bench/param_shapes.json}"

status=0
for b in "${bins[@]}"; do
  echo "=== $b"
  log="$(mktemp)"
  # shellcheck disable=SC2086
  if ! "$bindir/$b" "--benchmark_min_time=$min_time" ${BENCH_SMOKE_ARGS:-} 2>&1 | tee "$log"; then
    echo "run_smoke.sh: $b failed" >&2
    status=1
  elif grep -q "ERROR OCCURRED" "$log"; then
    echo "run_smoke.sh: $b reported a benchmark error" >&2
    status=1
  fi
  rm -f "$log"
done
exit $status
