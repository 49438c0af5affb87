// convert.h — block conversion between 16-bit storage and float, per ISA (F16C / AVX-512 / scalar).
// GCC does not vectorise _Float16 conversions by itself, so float16 uses intrinsics where available;
// bfloat16 is a shift with round-to-nearest-even and vectorises as plain C++. Per-ISA only.
#pragma once

#include <cstdint>

#include "fusedopt/dtype.h"

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fusedopt::detail {
inline namespace FUSEDOPT_CPU_CAPABILITY {

inline void load_block(const float* src, float* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

inline void load_block(const bfloat16* src, float* dst, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
}

inline void store_block(const float* src, bfloat16* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX2__)
  // 16 at a time: round to nearest even in 32-bit lanes, pack to 16 bits. NaNs are rare: a block of
  // 16 without one skips the quiet-NaN blend (the result is to_bfloat16's either way).
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF);
  auto round8 = [&](__m256i u) {
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
    return _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), lsb), 16);
  };
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_loadu_ps(src + i), x1 = _mm256_loadu_ps(src + i + 8);
    const int nan = _mm256_movemask_ps(_mm256_cmp_ps(x0, x1, _CMP_UNORD_Q));
    if (nan != 0) break;  // the scalar tail below handles the rest, NaNs included
    const __m256i r0 = round8(_mm256_castps_si256(x0)), r1 = round8(_mm256_castps_si256(x1));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r0, r1), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
#endif
#pragma omp simd
  for (std::int64_t j = i; j < n; ++j) dst[j] = to_bfloat16(src[j]);
}

inline void load_block(const half* src, float* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
  }
#endif
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

inline void store_block(const float* src, half* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
  }
#endif
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
#endif
  for (; i < n; ++i) dst[i] = to_half(src[i]);
}

}  // inline namespace FUSEDOPT_CPU_CAPABILITY
}  // namespace fusedopt::detail
