// update_kernels.cu — CUDA launchers for every rule (SGD, SGD-momentum, DCASGD in MXNet's and the
// paper's backup form, constant or adaptive lambda; plain, multi-precision,
// aggregated, row-sparse): detail::cuda_update and detail::cuda_update_rows of engine.h, with the same
// contracts as the CPU table (cpu/kernels.cpp). The arithmetic is the element rules of
// rules/update_rules.h; this file only moves data.
//
// Geometry:
//  - one tensor: a grid-stride elementwise kernel (dense_kernel);
//  - several tensors: multi-tensor-apply (multi_kernel), one block per 64 Ki-element chunk, the chunk
//    table passed by value (Note [chunk table] in multi_tensor_apply.cuh);
//  - row-sparse: one thread per element (or per vector of elements) of the rows updated, lazy (stored
//    rows) or standard (every row, gradient row looked up in a row -> k table) (rows_kernel).
// Every kernel takes a vectorised path when all operands are aligned (Note [vector path]) and indexes
// with 64-bit integers. Launches go to the caller's stream on the view's device (restored afterwards),
// are checked with cudaGetLastError, and nothing waits on the host.
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda_check.h"
#include "device_types.cuh"
#include "dispatch.h"
#include "engine.h"
#include "multi_tensor_apply.cuh"
#include "rules/update_rules.h"

namespace fusedopt::detail {
namespace cuda_impl {

/// Compile-time facts of one instantiation (see UpdateKind in engine.h).
/// Note [vector path]: kVec elements per access, so that the widest operand moves 16 bytes (float: 4,
/// double: 2, 16-bit without master: 8, with a float32 master: 4, the 16-bit weight then moving 8
/// bytes). The vector path is taken when every operand pointer is aligned to kVec * its element size;
/// whatever remains (a tail shorter than kVec, or a whole misaligned tensor) runs the scalar path.
/// Chunks and rows keep alignment because kChunkSize and (vector-path) row lengths are multiples of kVec.
template <class W, RuleKind R, bool kMom, bool kMaster>
struct Traits {  // outside the unnamed namespace: nvcc warns on its unused slots there
  using Acc = acc_t<W>;
  using State = std::conditional_t<kMaster, float, W>;  ///< momentum / prev / backup / ms storage
  static constexpr bool kDca = rule_has_anchor(R);           ///< reads prev (or the backup)
  static constexpr bool kWritesPrev = rule_writes_anchor(R);  ///< MXNet's prev; a backup is read only
  static constexpr bool kMs = rule_adaptive(R);              ///< mean square (adaptive lambda)
  static constexpr int kVec = kMaster ? 4 : static_cast<int>(16 / sizeof(W));
  /// Operands in chunk-table order: w, g, [m], [prev], [ms], [w32].
  static constexpr int kDepth = 2 + int(kMom) + int(kDca) + int(kMs) + int(kMaster);
  static constexpr int kSlotM = 2;
  static constexpr int kSlotPrev = 2 + int(kMom);
  static constexpr int kSlotMs = 2 + int(kMom) + int(kDca);
  static constexpr int kSlotW32 = 2 + int(kMom) + int(kDca) + int(kMs);
  static_assert(cuda::kChunkSize % kVec == 0, "chunks must start aligned");
};

}  // namespace cuda_impl

namespace {

using cuda_impl::Traits;

using cuda::DeviceConvert;
using cuda::load_n;
using cuda::pack_aligned;
using cuda::store_n;

constexpr int kThreads = 256;     ///< dense and row kernels
constexpr int kMtaThreads = 512;  ///< multi-tensor kernel: 128 elements per thread per chunk
constexpr int kBlocksPerSm = 2048 / kThreads;

/// Element pointers of one run (unused ones null). g == nullptr means a zero gradient. `prev` is the
/// DCASGD anchor: MXNet's previous weight, or a backup that is never written.
template <class W, class State>
struct Operands {
  W* w;
  const W* g;
  State* m;
  State* prev;
  float* w32;
  State* ms;
};

template <class W, RuleKind R, bool kMom, bool kMaster>
using OperandsOf = Operands<W, typename Traits<W, R, kMom, kMaster>::State>;

template <class W, RuleKind R, bool kMom, bool kMaster>
__host__ __device__ __forceinline__ bool operands_aligned(const OperandsOf<W, R, kMom, kMaster>& o) {
  using T = Traits<W, R, kMom, kMaster>;
  using State = typename T::State;
  constexpr int V = T::kVec;
  bool ok = pack_aligned<W, V>(o.w) && pack_aligned<W, V>(o.g);
  if constexpr (kMom) ok = ok && pack_aligned<State, V>(o.m);
  if constexpr (T::kDca) ok = ok && pack_aligned<State, V>(o.prev);
  if constexpr (T::kMs) ok = ok && pack_aligned<State, V>(o.ms);
  if constexpr (kMaster) ok = ok && pack_aligned<float, V>(o.w32);
  return ok;
}

/// Updates elements [i, i + N) of o: load, widen, apply the rule (as cpu/kernels.cpp apply()), round,
/// store. With kMaster the rule runs on the float32 master and the weight is written as cast(master).
template <class W, RuleKind R, bool kMom, bool kMaster, int N, bool kVector>
__device__ __forceinline__ void update_elems(const OperandsOf<W, R, kMom, kMaster>& o, std::int64_t i,
                                             const RuleScalars<acc_t<W>>& p) {
  using T = Traits<W, R, kMom, kMaster>;
  using Acc = typename T::Acc;
  using State = typename T::State;
  Acc w[N], g[N], m[N], pv[N], ms[N];
  if constexpr (kMaster) {
    load_n<N, kVector>(w, o.w32 + i);
  } else {
    W t[N];
    load_n<N, kVector>(t, o.w + i);
#pragma unroll
    for (int j = 0; j < N; ++j) w[j] = DeviceConvert<W>::to_acc(t[j]);
  }
  if (o.g != nullptr) {
    W t[N];
    load_n<N, kVector>(t, o.g + i);
#pragma unroll
    for (int j = 0; j < N; ++j) g[j] = DeviceConvert<W>::to_acc(t[j]);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) g[j] = Acc(0);
  }
  if constexpr (kMom) {
    State t[N];
    load_n<N, kVector>(t, o.m + i);
#pragma unroll
    for (int j = 0; j < N; ++j) m[j] = DeviceConvert<State>::to_acc(t[j]);
  }
  if constexpr (T::kDca) {
    State t[N];
    load_n<N, kVector>(t, o.prev + i);
#pragma unroll
    for (int j = 0; j < N; ++j) pv[j] = DeviceConvert<State>::to_acc(t[j]);
  }
  if constexpr (T::kMs) {
    State t[N];
    load_n<N, kVector>(t, o.ms + i);
#pragma unroll
    for (int j = 0; j < N; ++j) ms[j] = DeviceConvert<State>::to_acc(t[j]);
  }
#pragma unroll
  for (int j = 0; j < N; ++j) apply_rule<Acc, R, kMom, true>(w[j], m[j], pv[j], ms[j], g[j], p);
  if constexpr (kMaster) store_n<N, kVector>(o.w32 + i, w);
  {
    W t[N];
#pragma unroll
    for (int j = 0; j < N; ++j) t[j] = DeviceConvert<W>::from_acc(w[j]);
    store_n<N, kVector>(o.w + i, t);
  }
  if constexpr (kMom) {
    State t[N];
#pragma unroll
    for (int j = 0; j < N; ++j) t[j] = DeviceConvert<State>::from_acc(m[j]);
    store_n<N, kVector>(o.m + i, t);
  }
  if constexpr (T::kWritesPrev) {
    State t[N];
#pragma unroll
    for (int j = 0; j < N; ++j) t[j] = DeviceConvert<State>::from_acc(pv[j]);
    store_n<N, kVector>(o.prev + i, t);
  }
  if constexpr (T::kMs) {
    State t[N];
#pragma unroll
    for (int j = 0; j < N; ++j) t[j] = DeviceConvert<State>::from_acc(ms[j]);
    store_n<N, kVector>(o.ms + i, t);
  }
}

/// Elements [begin, end) of o, thread `tid` of `stride` threads, vector path first (Note [vector path]).
/// begin must be a multiple of kVec.
template <class W, RuleKind R, bool kMom, bool kMaster>
__device__ __forceinline__ void update_range(const OperandsOf<W, R, kMom, kMaster>& o,
                                             std::int64_t begin, std::int64_t end, std::int64_t tid,
                                             std::int64_t stride, const RuleScalars<acc_t<W>>& p) {
  constexpr int V = Traits<W, R, kMom, kMaster>::kVec;
  std::int64_t scalar_begin = begin;
  if (operands_aligned<W, R, kMom, kMaster>(o)) {
    const std::int64_t nvec = (end - begin) / V;
    for (std::int64_t v = tid; v < nvec; v += stride)
      update_elems<W, R, kMom, kMaster, V, true>(o, begin + v * V, p);
    scalar_begin = begin + nvec * V;
  }
  for (std::int64_t i = scalar_begin + tid; i < end; i += stride)
    update_elems<W, R, kMom, kMaster, 1, false>(o, i, p);
}

/// Loss scaling read on the device (SharedScalars::grad_scale / found_inf; null when absent) and the
/// call's unscaled rescale factor in double.
struct DeviceLossScale {
  const float* grad_scale;
  const float* found_inf;
  double rescale_grad;
};

/// Every kernel starts here: false when found_inf is set (the block returns, writing nothing), else
/// replaces rescale by scaled_rescale(rescale_grad, *grad_scale) when a scale is given. Two loads per
/// thread of the same two floats (served from cache), no host synchronisation.
template <class Acc>
__device__ __forceinline__ bool apply_loss_scale(const DeviceLossScale& ls, Acc& rescale) {
  if (ls.found_inf != nullptr && __ldg(ls.found_inf) != 0.0f) return false;
  if (ls.grad_scale != nullptr)
    rescale = static_cast<Acc>(scaled_rescale(ls.rescale_grad, __ldg(ls.grad_scale)));
  return true;
}

/// One tensor, grid-stride.
template <class W, RuleKind R, bool kMom, bool kMaster>
__global__ void __launch_bounds__(kThreads)
    dense_kernel(OperandsOf<W, R, kMom, kMaster> o, std::int64_t n, RuleScalars<acc_t<W>> p,
                 DeviceLossScale ls) {
  if (!apply_loss_scale(ls, p.rescale_grad)) return;
  const std::int64_t tid = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  update_range<W, R, kMom, kMaster>(o, 0, n, tid, stride, p);
}

/// Per-tensor scalars in the chunk table.
template <class Acc>
struct TensorScalars {
  Acc lr, wd;
};

/// Scalars shared by every tensor of a call, in the compute type.
template <class Acc>
struct SharedRule {
  Acc momentum, rescale_grad, clip, lamda, ms_decay, ms_gain, eps;
};

template <class W, RuleKind R, bool kMom, bool kMaster>
using MetaOf = cuda::TensorListMeta<Traits<W, R, kMom, kMaster>::kDepth, TensorScalars<acc_t<W>>>;

/// Many tensors: block b updates chunk block_to_chunk[b] of tensor slot block_to_tensor[b].
template <class W, RuleKind R, bool kMom, bool kMaster>
__global__ void __launch_bounds__(kMtaThreads)
    multi_kernel(const __grid_constant__ MetaOf<W, R, kMom, kMaster> meta, SharedRule<acc_t<W>> s,
                 DeviceLossScale ls) {
  if (!apply_loss_scale(ls, s.rescale_grad)) return;
  using T = Traits<W, R, kMom, kMaster>;
  using State = typename T::State;
  const int t = meta.block_to_tensor[blockIdx.x];
  const std::int64_t begin = std::int64_t(meta.block_to_chunk[blockIdx.x]) * cuda::kChunkSize;
  const std::int64_t end =
      meta.sizes[t] < begin + cuda::kChunkSize ? meta.sizes[t] : begin + cuda::kChunkSize;
  OperandsOf<W, R, kMom, kMaster> o{static_cast<W*>(meta.ptrs[0][t]),
                                    static_cast<const W*>(meta.ptrs[1][t]), nullptr, nullptr,
                                    nullptr, nullptr};
  if constexpr (kMom) o.m = static_cast<State*>(meta.ptrs[T::kSlotM][t]);
  if constexpr (T::kDca) o.prev = static_cast<State*>(meta.ptrs[T::kSlotPrev][t]);
  if constexpr (T::kMs) o.ms = static_cast<State*>(meta.ptrs[T::kSlotMs][t]);
  if constexpr (kMaster) o.w32 = static_cast<float*>(meta.ptrs[T::kSlotW32][t]);
  const RuleScalars<acc_t<W>> p{meta.extra[t].lr, meta.extra[t].wd, s.momentum, s.rescale_grad,
                                s.clip,           s.lamda,          s.ms_decay, s.ms_gain,
                                s.eps};
  update_range<W, R, kMom, kMaster>(o, begin, end, threadIdx.x, blockDim.x, p);
}

/// Row-sparse: o points at row 0 of every dense operand, o.g at gradient row 0. Work unit u covers N
/// elements of row q = u / units_per_row. Lazy: q runs over the stored rows, weight row map[q], gradient
/// row q. Standard: q runs over every weight row, gradient row map[q] (< 0: zero gradient).
template <class W, RuleKind R, bool kMom, bool kMaster, int N>
__global__ void __launch_bounds__(kThreads)
    rows_kernel(OperandsOf<W, R, kMom, kMaster> o, std::int64_t row_len, std::int64_t nrows,
                const std::int64_t* __restrict__ map, bool lazy, RuleScalars<acc_t<W>> p,
                DeviceLossScale ls) {
  if (!apply_loss_scale(ls, p.rescale_grad)) return;
  const std::int64_t units_per_row = row_len / N;  // N divides row_len when N > 1
  const std::int64_t total = nrows * units_per_row;
  // 32-bit division when it suffices: 64-bit division is a long instruction sequence.
  const bool narrow = total <= std::int64_t{0xFFFFFFFF};
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t u = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; u < total; u += stride) {
    const std::int64_t q = narrow ? std::int64_t(std::uint32_t(u) / std::uint32_t(units_per_row))
                                  : u / units_per_row;
    const std::int64_t col = (u - q * units_per_row) * N;
    const std::int64_t r = lazy ? map[q] : q;
    const std::int64_t k = lazy ? q : map[q];
    const std::int64_t off = r * row_len + col;
    OperandsOf<W, R, kMom, kMaster> ro{o.w + off, k >= 0 ? o.g + k * row_len + col : nullptr,
                                       nullptr, nullptr, nullptr, nullptr};
    if constexpr (kMom) ro.m = o.m + off;
    if constexpr (Traits<W, R, kMom, kMaster>::kDca) ro.prev = o.prev + off;
    if constexpr (Traits<W, R, kMom, kMaster>::kMs) ro.ms = o.ms + off;
    if constexpr (kMaster) ro.w32 = o.w32 + off;
    update_elems<W, R, kMom, kMaster, N, (N > 1)>(ro, 0, p);
  }
}

/// row_to_k[indices[k]] = k (row_to_k preset to -1). Indices are unique (validated on the host).
__global__ void __launch_bounds__(kThreads)
    scatter_row_to_k(const std::int64_t* __restrict__ indices, std::int64_t n,
                     std::int64_t* __restrict__ row_to_k) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t k = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride)
    row_to_k[indices[k]] = k;
}

// ---------------------------------------------------------------------------------------------------
// Host side.

/// Makes `id` the current device for the launcher's lifetime and restores the caller's device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int id) {
    int cur = 0;
    FUSEDOPT_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != id) {
      FUSEDOPT_CUDA_CHECK(cudaSetDevice(id));
      prev_ = cur;
    }
  }
  ~DeviceGuard() {
    if (prev_ >= 0) (void)cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

/// Streaming multiprocessors of `device`, asked once per device.
int sm_count(int device) {
  static std::array<std::atomic<int>, 64> cache{};
  const bool cacheable = device >= 0 && device < static_cast<int>(cache.size());
  if (cacheable) {
    const int v = cache[static_cast<std::size_t>(device)].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int v = 0;
  FUSEDOPT_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device));
  if (v <= 0) v = 1;
  if (cacheable) cache[static_cast<std::size_t>(device)].store(v, std::memory_order_relaxed);
  return v;
}

/// Grid for `units` work items of a grid-stride kernel: one per thread up to one full wave. Never 0.
unsigned grid_for(std::int64_t units, int sms) {
  const std::int64_t blocks = (units + kThreads - 1) / kThreads;
  const std::int64_t cap = std::int64_t(sms) * kBlocksPerSm;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(blocks, cap)));
}

DeviceLossScale device_loss_scale(const SharedScalars& s) {
  return DeviceLossScale{s.grad_scale, s.found_inf, s.rescale_grad};
}

template <class W, RuleKind R, bool kMom, bool kMaster>
OperandsOf<W, R, kMom, kMaster> operands(const Segment& seg) {
  using State = typename Traits<W, R, kMom, kMaster>::State;
  return {static_cast<W*>(seg.w),         static_cast<const W*>(seg.g), static_cast<State*>(seg.m),
          static_cast<State*>(seg.prev), seg.w32,                      static_cast<State*>(seg.ms)};
}

template <class W, RuleKind R, bool kMom, bool kMaster>
void run_dense(const Segment* segs, std::int64_t nseg, const SharedScalars& s, cudaStream_t stream,
               int sms) {
  using T = Traits<W, R, kMom, kMaster>;
  using Acc = typename T::Acc;
  if (nseg == 1) {
    const Segment& seg = segs[0];
    if (seg.n <= 0) return;
    const unsigned grid = grid_for((seg.n + T::kVec - 1) / T::kVec, sms);
    dense_kernel<W, R, kMom, kMaster><<<grid, kThreads, 0, stream>>>(
        operands<W, R, kMom, kMaster>(seg), seg.n, make_rule_scalars<Acc>(seg.lr, seg.wd, s),
        device_loss_scale(s));
    FUSEDOPT_CUDA_CHECK(cudaGetLastError());
    return;
  }
  using Extra = TensorScalars<Acc>;
  const SharedRule<Acc> shared{static_cast<Acc>(s.momentum),      static_cast<Acc>(s.rescale_grad),
                               static_cast<Acc>(s.clip),          static_cast<Acc>(s.lamda),
                               static_cast<Acc>(s.ms_decay),      static_cast<Acc>(1.0 - s.ms_decay),
                               static_cast<Acc>(s.eps)};
  cuda::multi_tensor_apply<T::kDepth, Extra>(
      nseg,
      [&](std::int64_t k, void* (&ptrs)[T::kDepth], std::int64_t& n, Extra& extra) {
        const Segment& seg = segs[k];
        ptrs[0] = seg.w;
        ptrs[1] = const_cast<void*>(seg.g);
        if constexpr (kMom) ptrs[T::kSlotM] = seg.m;
        if constexpr (T::kDca) ptrs[T::kSlotPrev] = seg.prev;
        if constexpr (T::kMs) ptrs[T::kSlotMs] = seg.ms;
        if constexpr (kMaster) ptrs[T::kSlotW32] = seg.w32;
        n = seg.n;
        extra = Extra{static_cast<Acc>(seg.lr), static_cast<Acc>(seg.wd)};
      },
      [&](const MetaOf<W, R, kMom, kMaster>& meta, int nblocks) {
        multi_kernel<W, R, kMom, kMaster><<<nblocks, kMtaThreads, 0, stream>>>(meta, shared,
                                                                         device_loss_scale(s));
        FUSEDOPT_CUDA_CHECK(cudaGetLastError());
      });
}

/// A stream-ordered device allocation freed on the same stream (after the kernels that use it), so no
/// host synchronisation is needed. Devices without memory pools fall back to cudaMalloc and a
/// synchronising free.
class StreamBuffer {
 public:
  StreamBuffer(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    cudaError_t err = cudaMallocAsync(&ptr_, bytes, stream);
    if (err == cudaErrorNotSupported) {
      (void)cudaGetLastError();
      pooled_ = false;
      err = cudaMalloc(&ptr_, bytes);
    }
    FUSEDOPT_CUDA_CHECK(err);
  }
  ~StreamBuffer() {
    if (ptr_ == nullptr) return;
    if (pooled_) {
      (void)cudaFreeAsync(ptr_, stream_);
    } else {
      (void)cudaStreamSynchronize(stream_);
      (void)cudaFree(ptr_);
    }
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  std::int64_t* int64s() const { return static_cast<std::int64_t*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
  bool pooled_ = true;
};

/// Copies n host int64s to `dst` on `stream`. Note [host indices]: RowSparseTask.indices is host memory
/// owned by the caller, who may reuse it as soon as the call returns. A cudaMemcpyAsync from pageable
/// memory returns only once the data is staged, so the copy is safe without a host synchronisation.
/// Page-locked or managed memory would be read later, asynchronously; such indices are first copied
/// into a pageable buffer of ours.
void copy_indices(std::int64_t* dst, const std::int64_t* src, std::int64_t n, cudaStream_t stream) {
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(std::int64_t);
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, src);
  if (err != cudaSuccess) (void)cudaGetLastError();
  if (err == cudaSuccess && attr.type != cudaMemoryTypeUnregistered) {
    std::vector<std::int64_t> staged(src, src + n);
    FUSEDOPT_CUDA_CHECK(
        cudaMemcpyAsync(dst, staged.data(), bytes, cudaMemcpyHostToDevice, stream));
    return;
  }
  FUSEDOPT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
}

template <class W, RuleKind R, bool kMom, bool kMaster>
void run_rows(const RowSparseTask& t, const SharedScalars& s, cudaStream_t stream, int sms) {
  using T = Traits<W, R, kMom, kMaster>;
  using Acc = typename T::Acc;
  const std::int64_t nrows = t.lazy ? t.num_indices : t.rows;
  if (nrows <= 0 || t.row_len <= 0) return;

  // Device index data (Note [host indices]): lazy needs the indices, standard a row -> k table built
  // on the device from them (-1 = row not stored), which moves num_indices, not rows, int64s.
  const std::size_t nbuf = static_cast<std::size_t>(t.num_indices + (t.lazy ? 0 : t.rows));
  StreamBuffer buf(nbuf * sizeof(std::int64_t), stream);
  std::int64_t* d_indices = buf.int64s();
  if (t.num_indices > 0) copy_indices(d_indices, t.indices, t.num_indices, stream);
  const std::int64_t* map = d_indices;
  if (!t.lazy) {
    std::int64_t* d_row_to_k = d_indices + t.num_indices;
    FUSEDOPT_CUDA_CHECK(cudaMemsetAsync(d_row_to_k, 0xFF, static_cast<std::size_t>(t.rows) *
                                                            sizeof(std::int64_t), stream));
    if (t.num_indices > 0) {
      scatter_row_to_k<<<grid_for(t.num_indices, sms), kThreads, 0, stream>>>(
          d_indices, t.num_indices, d_row_to_k);
      FUSEDOPT_CUDA_CHECK(cudaGetLastError());
    }
    map = d_row_to_k;
  }

  Segment whole = t.whole;
  whole.g = t.grad_rows;
  const auto o = operands<W, R, kMom, kMaster>(whole);
  const auto p = make_rule_scalars<Acc>(t.whole.lr, t.whole.wd, s);
  if (t.row_len % T::kVec == 0 && operands_aligned<W, R, kMom, kMaster>(o)) {
    const unsigned grid = grid_for(nrows * (t.row_len / T::kVec), sms);
    rows_kernel<W, R, kMom, kMaster, T::kVec>
        <<<grid, kThreads, 0, stream>>>(o, t.row_len, nrows, map, t.lazy, p, device_loss_scale(s));
  } else {
    const unsigned grid = grid_for(nrows * t.row_len, sms);
    rows_kernel<W, R, kMom, kMaster, 1>
        <<<grid, kThreads, 0, stream>>>(o, t.row_len, nrows, map, t.lazy, p, device_loss_scale(s));
  }
  FUSEDOPT_CUDA_CHECK(cudaGetLastError());
}

struct DenseLauncher {
  const Segment* segs;
  std::int64_t nseg;
  const SharedScalars& s;
  cudaStream_t stream;
  int sms;
  template <class W, RuleKind R, bool kMom, bool kMaster>
  void operator()() const {
    run_dense<W, R, kMom, kMaster>(segs, nseg, s, stream, sms);
  }
};

struct RowsLauncher {
  const RowSparseTask& t;
  const SharedScalars& s;
  cudaStream_t stream;
  int sms;
  template <class W, RuleKind R, bool kMom, bool kMaster>
  void operator()() const {
    // Row-sparse gradients reach SGD (and MXNet's constant DCASGD in the kernel tests) only.
    if constexpr (R == RuleKind::kSgd || R == RuleKind::kDcasgd)
      run_rows<W, R, kMom, kMaster>(t, s, stream, sms);
  }
};

}  // namespace

void cuda_update(const UpdateKind& kind, const Segment* segs, std::int64_t nseg,
                 const SharedScalars& s, Device device, Stream stream) {
  bool any = false;
  for (std::int64_t i = 0; i < nseg && !any; ++i) any = segs[i].n > 0;
  if (!any) return;  // nothing to launch; do not even touch the device
  DeviceGuard guard(device.id);
  dispatch_kind(kind, DenseLauncher{segs, nseg, s, static_cast<cudaStream_t>(stream.handle),
                                    sm_count(device.id)});
}

void cuda_update_rows(const UpdateKind& kind, const RowSparseTask& task, const SharedScalars& s,
                      Device device, Stream stream) {
  const std::int64_t nrows = task.lazy ? task.num_indices : task.rows;
  if (nrows <= 0 || task.row_len <= 0) return;
  DeviceGuard guard(device.id);
  dispatch_kind(kind, RowsLauncher{task, s, static_cast<cudaStream_t>(stream.handle),
                                   sm_count(device.id)});
}

}  // namespace fusedopt::detail
