// dtype.h — element types of fusedopt tensors: the DType enum, 16-bit storage types and their exact
// conversions to and from float. Light enough for CUDA and per-ISA kernel files to include.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FUSEDOPT_HD __host__ __device__ __forceinline__
#else
#define FUSEDOPT_HD inline
#endif

// Note [capability namespace]: inline functions that the per-ISA CPU kernel files use live in
// `inline namespace FUSEDOPT_CPU_CAPABILITY`, so the copy compiled with AVX flags gets its own mangled
// name and the linker can never hand it to baseline code (PyTorch's CPU_CAPABILITY namespace). Outside
// those files the macro is `baseline`. Callers simply write fusedopt::to_half(...).
#ifndef FUSEDOPT_CPU_CAPABILITY
#define FUSEDOPT_CPU_CAPABILITY baseline
#endif

namespace fusedopt {

enum class DType : std::uint8_t { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

/// Name used in error messages and in Python ("float16", "bfloat16", "float32", "float64").
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
  }
  return "unknown";
}

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
  }
  return 0;
}

/// IEEE binary16 storage. Layout-compatible with __half and NumPy float16.
struct half {
  std::uint16_t bits;
};
/// bfloat16 storage (upper half of a float32). Layout-compatible with __nv_bfloat16 and ml_dtypes.
struct bfloat16 {
  std::uint16_t bits;
};

inline namespace FUSEDOPT_CPU_CAPABILITY {

FUSEDOPT_HD std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
FUSEDOPT_HD float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// bfloat16 -> float is exact: the bits are the top half of a float.
FUSEDOPT_HD float to_float(bfloat16 h) { return bits_float(std::uint32_t(h.bits) << 16); }

/// float -> bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN. Branch-free apart from the
/// NaN select, so GCC vectorises it.
FUSEDOPT_HD bfloat16 to_bfloat16(float f) {
  std::uint32_t u = float_bits(f);
  std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return bfloat16{static_cast<std::uint16_t>(is_nan ? ((u >> 16) | 0x40u) : rounded)};
}

/// float16 -> float (exact), portable bit manipulation; the per-ISA CPU code uses F16C instead.
FUSEDOPT_HD float to_float(half h) {
  std::uint32_t sign = std::uint32_t(h.bits & 0x8000u) << 16;
  std::uint32_t exp = (h.bits >> 10) & 0x1Fu;
  std::uint32_t man = h.bits & 0x3FFu;
  if (exp == 0x1Fu) return bits_float(sign | 0x7F800000u | (man << 13));  // inf / NaN
  if (exp == 0) {
    // zero or subnormal: value = man * 2^-24, exact in float
    float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

/// float -> float16 with round-to-nearest-even, overflow to inf, subnormals, NaN kept quiet.
FUSEDOPT_HD half to_half(float f) {
  std::uint32_t u = float_bits(f);
  std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return half{static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu))};
  if (a >= 0x477FF000u) return half{static_cast<std::uint16_t>(sign | 0x7C00u)};  // rounds to >= 65520
  if (a < 0x38800000u) {
    // result is subnormal or zero: value / 2^-24 rounded to nearest even integer
    if (a < 0x33000000u) return half{sign};  // < 2^-25 rounds to zero
    std::uint32_t exp = a >> 23;
    std::uint32_t man = (a & 0x7FFFFFu) | 0x800000u;
    std::uint32_t shift = 126u - exp;  // 14..24 for the remaining range
    std::uint32_t q = man >> shift;
    std::uint32_t rem = man & ((1u << shift) - 1u);
    std::uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return half{static_cast<std::uint16_t>(sign | q)};
  }
  std::uint32_t r = a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u;  // rebias 127 -> 15 and round
  return half{static_cast<std::uint16_t>(sign | (r >> 13))};
}

template <class T>
struct StorageConvert;  // to_acc / from_acc between storage type T and its accumulate type
template <>
struct StorageConvert<float> {
  static FUSEDOPT_HD float to_acc(float x) { return x; }
  static FUSEDOPT_HD float from_acc(float x) { return x; }
};
template <>
struct StorageConvert<double> {
  static FUSEDOPT_HD double to_acc(double x) { return x; }
  static FUSEDOPT_HD double from_acc(double x) { return x; }
};
template <>
struct StorageConvert<half> {
  static FUSEDOPT_HD float to_acc(half x) { return to_float(x); }
  static FUSEDOPT_HD half from_acc(float x) { return to_half(x); }
};
template <>
struct StorageConvert<bfloat16> {
  static FUSEDOPT_HD float to_acc(bfloat16 x) { return to_float(x); }
  static FUSEDOPT_HD bfloat16 from_acc(float x) { return to_bfloat16(x); }
};

/// Accumulate ("compute") type of a storage type: float for 16- and 32-bit, double for double.
template <class T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <class T>
using acc_t = typename AccType<T>::type;

}  // inline namespace FUSEDOPT_CPU_CAPABILITY
}  // namespace fusedopt
