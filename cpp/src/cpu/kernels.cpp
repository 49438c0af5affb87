// kernels.cpp — CPU launchers for every rule (SGD, SGD-momentum, DCASGD in MXNet's and the paper's
// backup form, constant or adaptive lambda; plain, multi-precision,
// aggregated, row-sparse). Compiled once per CPU capability; see cpu/README.md. SGD and DCASGD share
// this file because they share the whole loop machinery: only the element rule differs.
#include <cstdint>
#include <limits>
#include <type_traits>

#include "check.h"
#include "cpu/convert.h"
#include "cpu/parallel.h"
#include "dispatch.h"
#include "engine.h"
#include "rules/update_rules.h"

#define FUSEDOPT_CONCAT_(a, b) a##b
#define FUSEDOPT_CONCAT(a, b) FUSEDOPT_CONCAT_(a, b)
#define FUSEDOPT_STRINGIFY_(a) #a
#define FUSEDOPT_STRINGIFY(a) FUSEDOPT_STRINGIFY_(a)

namespace fusedopt::detail {
inline namespace FUSEDOPT_CPU_CAPABILITY {

#if defined(__F16C__) && defined(__AVX2__)
typedef float V8f __attribute__((vector_size(32)));  // __m256 without its may_alias attribute

/// The adaptive rules' square root on 8 floats (correctly rounded, as the scalar one).
template <>
inline V8f rule_sqrt<V8f>(V8f x) {
  return V8f(_mm256_sqrt_ps(__m256(x)));
}
#endif

namespace {

/// Elements converted per block for 16-bit storage: 2 KiB of float scratch per operand stays in L1.
constexpr std::int64_t kBlock = 512;

/// Plain SGD ranges from this many elements run as two side-by-side streams (sgd_loop2). Measured
/// (1 thread): plain sgd 16M/64M 4-9 % faster in bench_sgd_cpu, and 64M 25-27 -> 20-21 ms with the
/// grad allocated right below the weight (NumPy's placement of equal arrays). sgd_mom (3 streams
/// already) gains 2-6 % in bench_sgd_cpu but loses up to 15 % with NumPy's placements, so it keeps
/// one stream; four streams were slower than two.
constexpr std::int64_t kTwoStreamMin = 1 << 15;

/// The element loop on compute-type operands. g is null when !kGrad (zero gradient); m, prev (the
/// DCASGD anchor: previous weight, or a backup that is only read) and ms are null when R / kMom do not
/// use them.
template <class Acc, RuleKind R, bool kMom, bool kGrad, bool kClip>
void apply_loop(Acc* __restrict w, const Acc* __restrict g, Acc* __restrict m,
                Acc* __restrict prev, Acc* __restrict ms, std::int64_t n, const RuleScalars<Acc> p) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    Acc wi = w[i];
    Acc gi = Acc(0), mi = Acc(0), ai = Acc(0), si = Acc(0);
    if constexpr (kGrad) gi = g[i];
    if constexpr (kMom) mi = m[i];
    if constexpr (rule_has_anchor(R)) ai = prev[i];
    if constexpr (rule_adaptive(R)) si = ms[i];
    apply_rule<Acc, R, kMom, kClip>(wi, mi, ai, si, gi, p);
    if constexpr (kMom) m[i] = mi;
    if constexpr (rule_writes_anchor(R)) prev[i] = ai;
    if constexpr (rule_adaptive(R)) ms[i] = si;
    w[i] = wi;
  }
}

/// SGD over two equally long ranges in one loop: operands at [i] and [i + n] stream side by side.
/// A core here reaches its bandwidth only with enough concurrent streams (PERF.md: more streams per
/// core, more bandwidth), and plain SGD has only two; the element results are those of apply_loop.
template <class Acc, bool kGrad, bool kClip>
void sgd_loop2(Acc* __restrict w, const Acc* __restrict g, std::int64_t n, const RuleScalars<Acc> p) {
  Acc* __restrict w2 = w + n;
  const Acc* __restrict g2 = kGrad ? g + n : g;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    Acc a = w[i], b = w2[i];
    Acc ga = Acc(0), gb = Acc(0);
    if constexpr (kGrad) {
      ga = g[i];
      gb = g2[i];
    }
    sgd_rule<Acc, kClip>(a, ga, p);
    sgd_rule<Acc, kClip>(b, gb, p);
    w[i] = a;
    w2[i] = b;
  }
}

/// The element loop, with the clip compiled out when clipping is off (clip == +inf gives the same
/// numbers either way; only the branchless compare-and-blend is saved).
template <class Acc, RuleKind R, bool kMom, bool kGrad>
void apply(Acc* __restrict w, const Acc* __restrict g, Acc* __restrict m, Acc* __restrict prev,
           Acc* __restrict ms, std::int64_t n, const RuleScalars<Acc> p) {
  const bool clip = p.clip != std::numeric_limits<Acc>::infinity();
  if constexpr (R == RuleKind::kSgd && !kMom) {
    if (n >= kTwoStreamMin) {
      // Pairs [0, h) with [h, 2h), then the rest in one stream. h = 0.45 n, not n / 2: streams a
      // power-of-two distance apart (n / 2 of a power-of-two tensor) collide in the memory system, and
      // equal-sized arrays allocated one after the other sit such distances apart too (64M sgd with
      // the grad right below the weight: n / 2 split 29.8 ms, one stream 23.5, 0.45 n 20.6 ms).
      const std::int64_t h = n / 100 * 45 / 64 * 64;
      if (clip) sgd_loop2<Acc, kGrad, true>(w, g, h, p);
      else sgd_loop2<Acc, kGrad, false>(w, g, h, p);
      w += 2 * h;
      if constexpr (kGrad) g += 2 * h;
      n -= 2 * h;
    }
  }
  if (clip)
    apply_loop<Acc, R, kMom, kGrad, true>(w, g, m, prev, ms, n, p);
  else
    apply_loop<Acc, R, kMom, kGrad, false>(w, g, m, prev, ms, n, p);
}

#if defined(__F16C__) && defined(__AVX2__)


/// 8 float16 / bfloat16 values widened to float, and 8 floats rounded to them (nearest even; NaN stays
/// a quiet NaN, as to_bfloat16).
inline V8f load8(const half* p) {
  return V8f(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline V8f load8(const bfloat16* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return V8f(_mm256_castsi256_ps(_mm256_slli_epi32(u, 16)));
}
inline void store8(half* p, V8f x) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(__m256(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void store8(bfloat16* p, V8f x) {
  const __m256i u = _mm256_castps_si256(__m256(x));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256 nan = _mm256_cmp_ps(__m256(x), __m256(x), _CMP_UNORD_Q);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, quiet, _mm256_castps_si256(nan));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}

/// Multi-precision update of float16 / bfloat16 weights in one pass: per 8 elements the gradient is
/// widened, the rule runs on the float32 master (and momentum / prev) in registers, and the new master
/// and its 16-bit cast are stored. The element rules are the scalar ones instantiated on 8-float
/// vectors (GCC vector arithmetic), so the numbers are those of the block path (tested bitwise). One
/// pass matters: the block path's three passes over L1 blocks interleave the memory streams badly when
/// the arrays sit a large power of two apart, as NumPy's back-to-back allocations do (64M mp_sgd_mom
/// fp16 44-50 ms in that placement against 35 ms one-pass; bf16 45-55 against 37-38 ms).
/// Returns where it stopped (the block path does the last < 8 elements).
template <class W, RuleKind R, bool kMom, bool kClip>
std::int64_t mp_fused(const Segment& seg, std::int64_t b, std::int64_t e,
                      const RuleScalars<float>& s) {
  using V = V8f;
  auto splat = [](float x) { return V{x, x, x, x, x, x, x, x}; };
  const RuleScalars<V> p{splat(s.lr),       splat(s.wd),       splat(s.momentum),
                         splat(s.rescale_grad), splat(s.clip), splat(s.lamda),
                         splat(s.ms_decay), splat(s.ms_gain), splat(s.eps)};
  W* w = static_cast<W*>(seg.w);
  const W* g = static_cast<const W*>(seg.g);
  float* w32 = seg.w32;
  float* m = static_cast<float*>(seg.m);
  float* prev = static_cast<float*>(seg.prev);
  float* ms = static_cast<float*>(seg.ms);
  std::int64_t i = b;
  for (; i + 8 <= e; i += 8) {
    const V gi = load8(g + i);
    V wi = V(_mm256_loadu_ps(w32 + i));
    V mi{}, ai{}, si{};
    if constexpr (kMom) mi = V(_mm256_loadu_ps(m + i));
    if constexpr (rule_has_anchor(R)) ai = V(_mm256_loadu_ps(prev + i));
    if constexpr (rule_adaptive(R)) si = V(_mm256_loadu_ps(ms + i));
    apply_rule<V, R, kMom, kClip>(wi, mi, ai, si, gi, p);
    if constexpr (kMom) _mm256_storeu_ps(m + i, __m256(mi));
    if constexpr (rule_writes_anchor(R)) _mm256_storeu_ps(prev + i, __m256(ai));
    if constexpr (rule_adaptive(R)) _mm256_storeu_ps(ms + i, __m256(si));
    _mm256_storeu_ps(w32 + i, __m256(wi));
    store8(w + i, wi);
  }
  return i;
}
#endif

/// Updates elements [b, e) of one segment. W is the weight's storage type; with kMaster the rule runs
/// on the float32 master (and float32 momentum / prev) and the weight is written as cast(master);
/// without it 16-bit operands are widened to float per block and rounded once on store.
template <class W, RuleKind R, bool kMom, bool kMaster, bool kGrad>
void update_range(const Segment& seg, std::int64_t b, std::int64_t e, const SharedScalars& s) {
  using Acc = acc_t<W>;
  const auto p = make_rule_scalars<Acc>(seg.lr, seg.wd, s);
  W* w = static_cast<W*>(seg.w);
  const W* g = static_cast<const W*>(seg.g);
  constexpr bool kAnchor = rule_has_anchor(R);
  constexpr bool kWritesAnchor = rule_writes_anchor(R);
  constexpr bool kMs = rule_adaptive(R);
  if constexpr (kMaster) {
    static_assert(std::is_same_v<Acc, float> && !std::is_same_v<W, float>);
    float* m = static_cast<float*>(seg.m);
    float* prev = static_cast<float*>(seg.prev);
    float* ms = static_cast<float*>(seg.ms);
    float gb[kBlock];
    std::int64_t start = b;
#if defined(__F16C__) && defined(__AVX2__)
    if constexpr (kGrad) {
      start = p.clip == std::numeric_limits<float>::infinity()
                  ? mp_fused<W, R, kMom, false>(seg, b, e, p)
                  : mp_fused<W, R, kMom, true>(seg, b, e, p);
    }
#endif
    for (std::int64_t i = start; i < e; i += kBlock) {
      std::int64_t len = std::min(kBlock, e - i);
      if constexpr (kGrad) load_block(g + i, gb, len);
      apply<float, R, kMom, kGrad>(seg.w32 + i, gb, kMom ? m + i : nullptr,
                                   kAnchor ? prev + i : nullptr, kMs ? ms + i : nullptr, len, p);
      store_block(seg.w32 + i, w + i, len);
    }
  } else if constexpr (std::is_same_v<W, Acc>) {
    W* m = static_cast<W*>(seg.m);
    W* prev = static_cast<W*>(seg.prev);
    W* ms = static_cast<W*>(seg.ms);
    apply<Acc, R, kMom, kGrad>(w + b, kGrad ? g + b : nullptr, kMom ? m + b : nullptr,
                               kAnchor ? prev + b : nullptr, kMs ? ms + b : nullptr, e - b, p);
  } else {
    W* m = static_cast<W*>(seg.m);
    W* prev = static_cast<W*>(seg.prev);
    W* ms = static_cast<W*>(seg.ms);
    float wb[kBlock], gb[kBlock], mb[kMom ? kBlock : 1], pb[kAnchor ? kBlock : 1],
        sb[kMs ? kBlock : 1];
    for (std::int64_t i = b; i < e; i += kBlock) {
      std::int64_t len = std::min(kBlock, e - i);
      load_block(w + i, wb, len);
      if constexpr (kGrad) load_block(g + i, gb, len);
      if constexpr (kMom) load_block(m + i, mb, len);
      if constexpr (kAnchor) load_block(prev + i, pb, len);
      if constexpr (kMs) load_block(ms + i, sb, len);
      apply<float, R, kMom, kGrad>(wb, gb, mb, pb, sb, len, p);
      store_block(wb, w + i, len);
      if constexpr (kMom) store_block(mb, m + i, len);
      if constexpr (kWritesAnchor) store_block(pb, prev + i, len);
      if constexpr (kMs) store_block(sb, ms + i, len);
    }
  }
}

template <class W, RuleKind R, bool kMom, bool kMaster>
void update_piece(const Segment& seg, std::int64_t b, std::int64_t e, const SharedScalars& s) {
  if (seg.g != nullptr)
    update_range<W, R, kMom, kMaster, true>(seg, b, e, s);
  else
    update_range<W, R, kMom, kMaster, false>(seg, b, e, s);
}

template <class W, RuleKind R, bool kMom, bool kMaster>
void run_dense(const Segment* segs, std::int64_t nseg, const SharedScalars& s) {
  for_each_range(segs, nseg, [&](std::int64_t i, std::int64_t b, std::int64_t e) {
    update_piece<W, R, kMom, kMaster>(segs[i], b, e, s);
  });
}

/// The segment of row r of every dense operand, with gradient row `grow` (null = zero gradient).
template <class W, bool kMaster>
Segment row_segment(const RowSparseTask& t, std::int64_t r, const void* grow) {
  using State = std::conditional_t<kMaster, float, W>;
  const std::int64_t off = r * t.row_len;
  Segment seg = t.whole;
  seg.w = static_cast<W*>(t.whole.w) + off;
  seg.g = grow;
  if (seg.m) seg.m = static_cast<State*>(t.whole.m) + off;
  if (seg.prev) seg.prev = static_cast<State*>(t.whole.prev) + off;
  if (seg.ms) seg.ms = static_cast<State*>(t.whole.ms) + off;
  if (seg.w32) seg.w32 = t.whole.w32 + off;
  seg.n = t.row_len;
  return seg;
}

template <class W, RuleKind R, bool kMom, bool kMaster>
void run_rows(const RowSparseTask& t, const SharedScalars& s) {
  const W* grad = static_cast<const W*>(t.grad_rows);
  if (t.lazy) {
    for_each_index(t.num_indices, t.row_len, [&](std::int64_t k) {
      Segment seg = row_segment<W, kMaster>(t, t.indices[k], grad + k * t.row_len);
      update_piece<W, R, kMom, kMaster>(seg, 0, seg.n, s);
    });
  } else {
    for_each_index(t.rows, t.row_len, [&](std::int64_t r) {
      std::int64_t k = t.row_to_k[r];
      Segment seg = row_segment<W, kMaster>(t, r, k >= 0 ? grad + k * t.row_len : nullptr);
      update_piece<W, R, kMom, kMaster>(seg, 0, seg.n, s);
    });
  }
}

struct DenseLauncher {
  const Segment* segs;
  std::int64_t nseg;
  const SharedScalars& s;
  template <class W, RuleKind R, bool kMom, bool kMaster>
  void operator()() const {
    run_dense<W, R, kMom, kMaster>(segs, nseg, s);
  }
};

struct RowsLauncher {
  const RowSparseTask& t;
  const SharedScalars& s;
  template <class W, RuleKind R, bool kMom, bool kMaster>
  void operator()() const {
    // Row-sparse gradients reach SGD (and MXNet's constant DCASGD in the kernel tests) only; the other
    // rules are not compiled for rows.
    if constexpr (R == RuleKind::kSgd || R == RuleKind::kDcasgd) run_rows<W, R, kMom, kMaster>(t, s);
  }
};

void update(const UpdateKind& kind, const Segment* segs, std::int64_t nseg, const SharedScalars& s) {
  dispatch_kind(kind, DenseLauncher{segs, nseg, s});
}

void update_rows(const UpdateKind& kind, const RowSparseTask& t, const SharedScalars& s) {
  dispatch_kind(kind, RowsLauncher{t, s});
}

}  // namespace
}  // inline namespace FUSEDOPT_CPU_CAPABILITY

/// Named per capability (make_cpu_kernels_avx2, ...) so capability.cpp can reach every copy.
CpuKernelTable FUSEDOPT_CONCAT(make_cpu_kernels_, FUSEDOPT_CPU_CAPABILITY)() {
  return CpuKernelTable{FUSEDOPT_STRINGIFY(FUSEDOPT_CPU_CAPABILITY), &update, &update_rows};
}

}  // namespace fusedopt::detail
