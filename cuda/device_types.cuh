// device_types.cuh — fusedopt storage types on the device: the mapping of fusedopt::half / bfloat16
// onto __half / __nv_bfloat16, their conversions to and from the accumulate type, and aligned packs for
// vectorised loads and stores. FUSEDOPT_HD (dtype.h) is __host__ __device__ here, so the element rules
// of rules/update_rules.h compile for the device unchanged.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "fusedopt/dtype.h"

namespace fusedopt::cuda {

/// The CUDA type with the layout of a fusedopt storage type (fusedopt's own types are plain uint16_t
/// wrappers, so device memory written by either side reads the same).
template <class T>
struct DeviceStorage {
  using type = T;
};
template <>
struct DeviceStorage<half> {
  using type = __half;
};
template <>
struct DeviceStorage<bfloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(half) == sizeof(__half) && alignof(half) == alignof(std::uint16_t));
static_assert(sizeof(bfloat16) == sizeof(__nv_bfloat16));

/// Storage -> accumulate type on the device. 16-bit -> float is exact (as on the CPU); float -> 16-bit
/// rounds to nearest even with the hardware conversion (cvt.rn), which equals dtype.h's to_half /
/// to_bfloat16 for every non-NaN input (NaN stays NaN; its payload may differ).
template <class T>
struct DeviceConvert {
  static __device__ __forceinline__ T to_acc(T x) { return x; }
  static __device__ __forceinline__ T from_acc(T x) { return x; }
};
template <>
struct DeviceConvert<half> {
  static __device__ __forceinline__ float to_acc(half x) {
    return __half2float(__ushort_as_half(x.bits));
  }
  static __device__ __forceinline__ half from_acc(float x) {
    return half{__half_as_ushort(__float2half_rn(x))};
  }
};
template <>
struct DeviceConvert<bfloat16> {
  static __device__ __forceinline__ float to_acc(bfloat16 x) {
    return __bfloat162float(__ushort_as_bfloat16(x.bits));
  }
  static __device__ __forceinline__ bfloat16 from_acc(float x) {
    return bfloat16{__bfloat16_as_ushort(__float2bfloat16_rn(x))};
  }
};

/// N elements of T loaded or stored with one instruction (16 bytes at most); the address must be
/// aligned to sizeof(Pack).
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// r[0..N) = p[0..N), one vector access when kVector (p aligned to N * sizeof(T)), else N scalar ones.
template <int N, bool kVector, class T>
__device__ __forceinline__ void load_n(T (&r)[N], const T* __restrict__ p) {
  if constexpr (kVector) {
    const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
    for (int j = 0; j < N; ++j) r[j] = pk.v[j];
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) r[j] = p[j];
  }
}

template <int N, bool kVector, class T>
__device__ __forceinline__ void store_n(T* __restrict__ p, const T (&r)[N]) {
  if constexpr (kVector) {
    Pack<T, N> pk;
#pragma unroll
    for (int j = 0; j < N; ++j) pk.v[j] = r[j];
    *reinterpret_cast<Pack<T, N>*>(p) = pk;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) p[j] = r[j];
  }
}

/// True when p (null counts as aligned) may be accessed as Pack<T, N>.
template <class T, int N>
__host__ __device__ __forceinline__ bool pack_aligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % (sizeof(T) * N) == 0;
}

}  // namespace fusedopt::cuda
