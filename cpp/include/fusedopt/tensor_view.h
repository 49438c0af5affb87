// tensor_view.h — non-owning, DLTensor-shaped views of the arrays an update reads and writes.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "fusedopt/dtype.h"

namespace fusedopt {

/// Device kinds, numbered as DLPack's DLDeviceType.
enum class DeviceType : std::int32_t { kCPU = 1, kCUDA = 2, kCUDAHost = 3, kCUDAManaged = 13 };

struct Device {
  DeviceType type = DeviceType::kCPU;
  std::int32_t id = 0;
  /// Memory the host can dereference (CPU, pinned, managed).
  bool host_accessible() const {
    return type == DeviceType::kCPU || type == DeviceType::kCUDAHost ||
           type == DeviceType::kCUDAManaged;
  }
  bool operator==(const Device& o) const { return type == o.type && id == o.id; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

/// An opaque CUDA stream (cudaStream_t); null means the legacy default stream. Ignored on the CPU.
struct Stream {
  void* handle = nullptr;
};

/// A non-owning view of a dense array: pointer, dtype, shape, optional strides (in elements; absent =
/// C-contiguous), device and a read-only flag. Shapes are stored inline, so a view costs no allocation.
///
/// Note [dense layouts]: the updates are elementwise, so besides C-contiguous arrays they accept any
/// dense layout — strides that are a permutation of a C-contiguous array's (a transposed matrix,
/// torch's channels_last), positive, with no gaps and no two elements at one address — provided the
/// weight, gradient and every state of one update have identical strides. Such arrays occupy exactly
/// [data, data + numel) in memory and element i of one sits at the same offset as element i of the
/// others, so the update runs over that range as one flat array. Anything else (different strides,
/// gaps, broadcast or overlapping strides, negative strides) is refused, never copied.
struct TensorView {
  static constexpr int kMaxDims = 8;

  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Device device{};
  std::int32_t ndim = 0;
  std::array<std::int64_t, kMaxDims> shape{};
  std::array<std::int64_t, kMaxDims> strides{};
  bool has_strides = false;
  bool read_only = false;

  TensorView() = default;
  /// A C-contiguous view of `data` with the given shape.
  TensorView(void* p, DType t, std::initializer_list<std::int64_t> dims, Device dev = {})
      : data(p), dtype(t), device(dev) {
    set_shape(dims.begin(), static_cast<std::int32_t>(dims.size()));
  }
  TensorView(void* p, DType t, const std::vector<std::int64_t>& dims, Device dev = {})
      : data(p), dtype(t), device(dev) {
    set_shape(dims.data(), static_cast<std::int32_t>(dims.size()));
  }
  /// A read-only C-contiguous view (gradients may be const).
  TensorView(const void* p, DType t, std::initializer_list<std::int64_t> dims, Device dev = {})
      : TensorView(const_cast<void*>(p), t, dims, dev) {
    read_only = true;
  }

  /// Sets the shape; throws fusedopt::ValueError beyond kMaxDims dimensions.
  void set_shape(const std::int64_t* dims, std::int32_t n);

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int32_t i = 0; i < ndim; ++i) n *= shape[static_cast<std::size_t>(i)];
    return n;
  }
  /// Stride of dimension i in elements (the C-contiguous one when the view has no strides).
  std::int64_t stride(std::int32_t i) const;
  /// True when the elements are densely packed in row-major order (size-1 dims may have any stride).
  bool is_contiguous() const;
  /// True when the elements occupy exactly [data, data + numel) once each, in any dimension order
  /// (positive strides, no gaps, no overlap; size-1 dims may have any stride). See Note [dense layouts].
  bool is_dense() const;
  /// True when `o` (of the same shape) lays its elements out exactly as this view does: equal strides
  /// in every dimension of size > 1. Arrays without elements always match.
  bool same_layout(const TensorView& o) const;
};

/// A row-sparse gradient: `data` holds len(indices) rows of a (rows, ...) matrix, `indices` their row
/// numbers (int64, any order, unique, in range).
struct RowSparseView {
  TensorView data;
  const std::int64_t* indices = nullptr;
  std::int64_t num_indices = 0;
  std::array<std::int64_t, TensorView::kMaxDims> shape{};  ///< the dense shape
  std::int32_t ndim = 0;
};

}  // namespace fusedopt
