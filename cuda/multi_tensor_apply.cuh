// multi_tensor_apply.cuh — aggregated (multi-tensor) launches: a fixed-capacity chunk table passed by
// value as a kernel argument, modelled on NVIDIA/apex csrc/multi_tensor_apply.cuh and PyTorch's
// ATen/native/cuda/MultiTensorApply.cuh.
//
// Note [chunk table]: every tensor is cut into chunks of kChunkSize elements; one thread block updates
// one chunk. A launch carries a TensorListMeta: per tensor slot its kDepth operand pointers, element count
// and per-tensor scalars (lr, wd); per block the slot it works on and its chunk number. The host walks
// the tensors once, filling slots and blocks, and launches whenever the table has no room for another
// tensor or block. A tensor whose chunks did not all fit is carried over: it becomes slot 0 of the next
// table and its remaining chunks continue from where the launch stopped. Zero-size tensors take no slot.
// The whole table stays below the kernel-parameter limit (static_assert): 32 KB since CUDA 12.1 on every
// architecture CUDA 13 supports, 4 KB before. There is no device allocation and no host-to-device copy
// per step, and any number of tensors takes as many launches as needed: with 32 KB one launch holds 255
// tensors and 2048 chunks (134 M elements), so the ResNet-50 (161 tensors, 25.6 M elements) and
// BERT-base (199 tensors, 109 M elements) lists each take a single launch. This is not MXNet's MultiSGDKernel, whose
// every element index loops over all tensors up to the largest size.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

namespace fusedopt::cuda {

/// Elements per chunk (one block each). A multiple of every vector width, so every chunk of an aligned
/// tensor starts aligned (apex uses the same size).
constexpr std::int64_t kChunkSize = 65536;
#if CUDART_VERSION >= 12010
/// Blocks per launch; block_to_chunk / block_to_tensor cost 5 bytes each.
constexpr int kMaxBlocksPerLaunch = 2048;
/// Bytes the table may use: the 32764-byte kernel-parameter limit of CUDA >= 12.1 minus room for the
/// kernel's other arguments.
constexpr std::size_t kTableBytes = 30 * 1024;
#else
constexpr int kMaxBlocksPerLaunch = 320;
/// 4096 bytes of kernel parameters (CUDA < 12.1) minus room for the kernel's other arguments.
constexpr std::size_t kTableBytes = 3840;
#endif

/// The chunk table of one launch. kDepth operand pointers per tensor (the kernel knows which is which);
/// Extra holds the per-tensor scalars.
template <int kDepth, class Extra>
struct TensorListMeta {
  static constexpr int kMaxBlocks = kMaxBlocksPerLaunch;
  static constexpr int kMaxTensors = static_cast<int>(std::min<std::size_t>(
      255, (kTableBytes - kMaxBlocks * (sizeof(std::int32_t) + sizeof(std::uint8_t))) /
               (kDepth * sizeof(void*) + sizeof(std::int64_t) + sizeof(Extra))));

  void* ptrs[kDepth][kMaxTensors];
  std::int64_t sizes[kMaxTensors];
  Extra extra[kMaxTensors];
  std::int32_t block_to_chunk[kMaxBlocks];  ///< chunk number within its tensor
  std::uint8_t block_to_tensor[kMaxBlocks];  ///< slot in ptrs / sizes / extra
};

/// Walks `ntensors` tensors and calls launch(meta, nblocks) for each full table and for the last one.
/// get(k, ptrs, n, extra) fills tensor k's operand pointers, element count and scalars; tensors with
/// n == 0 are skipped. launch never sees nblocks == 0.
template <int kDepth, class Extra, class Get, class Launch>
void multi_tensor_apply(std::int64_t ntensors, Get&& get, Launch&& launch) {
  using Meta = TensorListMeta<kDepth, Extra>;
  static_assert(Meta::kMaxTensors >= 8, "chunk table too small for this depth");
  static_assert(sizeof(Meta) <= kTableBytes, "chunk table exceeds the kernel-parameter budget");
  Meta meta{};
  int nt = 0;  // slots used
  int nb = 0;  // blocks used
  for (std::int64_t k = 0; k < ntensors; ++k) {
    void* ptrs[kDepth];
    std::int64_t n = 0;
    Extra extra{};
    get(k, ptrs, n, extra);
    if (n <= 0) continue;
    for (int d = 0; d < kDepth; ++d) meta.ptrs[d][nt] = ptrs[d];
    meta.sizes[nt] = n;
    meta.extra[nt] = extra;
    ++nt;
    const std::int64_t chunks = (n + kChunkSize - 1) / kChunkSize;
    for (std::int64_t c = 0; c < chunks; ++c) {
      meta.block_to_tensor[nb] = static_cast<std::uint8_t>(nt - 1);
      meta.block_to_chunk[nb] = static_cast<std::int32_t>(c);
      ++nb;
      const bool last_chunk = c == chunks - 1;
      const bool tensors_full = nt == Meta::kMaxTensors && last_chunk;
      const bool blocks_full = nb == Meta::kMaxBlocks;
      if (!tensors_full && !blocks_full) continue;
      launch(meta, nb);
      nb = 0;
      if (last_chunk) {
        nt = 0;
      } else {  // carry the unfinished tensor over as slot 0
        for (int d = 0; d < kDepth; ++d) meta.ptrs[d][0] = meta.ptrs[d][nt - 1];
        meta.sizes[0] = meta.sizes[nt - 1];
        meta.extra[0] = meta.extra[nt - 1];
        nt = 1;
      }
    }
  }
  if (nb > 0) launch(meta, nb);
}

}  // namespace fusedopt::cuda
