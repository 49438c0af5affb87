// parallel.h — how CPU kernels split work: one OpenMP region per call over the virtual concatenation
// of all segments, cut into equal contiguous ranges (one per thread); small calls run serially.
// Per-ISA only (the region's outlined body must get the file's ISA flags).
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "engine.h"

namespace fusedopt::detail {
inline namespace FUSEDOPT_CPU_CAPABILITY {

/// Elements below which one more thread does not pay for waking it: at ~45 GB/s and 12-28 bytes per
/// element, 32768 elements take 10-20 us, well above the ~1-2 us cost of an OpenMP region.
constexpr std::int64_t kMinPerThread = 32768;
/// Thread ranges start on multiples of this many elements (a 64-byte line of float32 = 16; 64 also
/// keeps float16 and float64 ranges line-aligned relative to the tensor start).
constexpr std::int64_t kSplitAlign = 64;

inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int threads_for(std::int64_t work) {
  std::int64_t want = work / kMinPerThread;
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(max_threads(), want)));
}

/// Calls f(segment_index, begin, end) over every element of every segment exactly once, in parallel
/// when the total is large enough. Zero-size segments are never visited.
template <class F>
void for_each_range(const Segment* segs, std::int64_t nseg, F&& f) {
  std::int64_t total = 0;
  for (std::int64_t i = 0; i < nseg; ++i) total += segs[i].n;
  if (total == 0) return;
  int nt = threads_for(total);
  if (nt <= 1) {
    for (std::int64_t i = 0; i < nseg; ++i)
      if (segs[i].n > 0) f(i, std::int64_t{0}, segs[i].n);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
  {
    const std::int64_t t = omp_get_thread_num();
    auto cut = [&](std::int64_t k) {
      return k >= nt ? total : (total * k / nt) / kSplitAlign * kSplitAlign;
    };
    std::int64_t lo = cut(t), hi = cut(t + 1);
    std::int64_t base = 0;  // virtual offset of segment i
    for (std::int64_t i = 0; i < nseg && base < hi; base += segs[i].n, ++i) {
      std::int64_t b = std::max(lo, base), e = std::min(hi, base + segs[i].n);
      if (b < e) f(i, b - base, e - base);
    }
  }
#endif
}

/// Calls f(i) for i in [0, n), in parallel (static schedule) when n * work_per_item is large enough.
template <class F>
void for_each_index(std::int64_t n, std::int64_t work_per_item, F&& f) {
  int nt = threads_for(n * work_per_item);
  if (nt <= 1) {
    for (std::int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) f(i);
#endif
}

}  // inline namespace FUSEDOPT_CPU_CAPABILITY
}  // namespace fusedopt::detail
