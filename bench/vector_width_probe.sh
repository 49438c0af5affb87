#!/bin/sh
# vector_width_probe.sh [sizes] [layouts] [rounds] — builds vector_width_probe.c (the sgd_mom loop per
# vector width and variant) and times every variant interleaved on the same buffers, 1 thread.
# Needs a CPU with AVX-512 F/VL/BW/DQ (the avx512 variants run unconditionally).
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
CC=${CC:-cc}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
F512="-mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma"
$CC -O3 -fopenmp-simd -DPROBE_KERNELS -DV=avx2 -mavx2 -mfma -c "$HERE/vector_width_probe.c" -o "$T/a2.o"
$CC -O3 -fopenmp-simd -DPROBE_KERNELS -DV=avx512 $F512 -c "$HERE/vector_width_probe.c" -o "$T/a5.o"
$CC -O3 -fopenmp-simd -DPROBE_KERNELS -DV=avx512_256 $F512 -mprefer-vector-width=256 -c "$HERE/vector_width_probe.c" -o "$T/a5n.o"
$CC -O2 "$HERE/vector_width_probe.c" "$T/a2.o" "$T/a5.o" "$T/a5n.o" -o "$T/probe"
grep -m1 'model name' /proc/cpuinfo || true
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in ${1:-16384 65536 1048576 4194304 16777216}; do
  for lay in ${2:-numpy same distinct}; do "$T/probe" "$n" "$lay" "${3:-21}"; done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
