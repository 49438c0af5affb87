// validate.h — argument validation shared by every operator of the C++ API. Runs to completion before
// any kernel writes; messages name the operator, the argument, what was expected and what was got.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt::detail {

/// An argument's name for messages: "mom", or "moms[3]" when index >= 0. No allocation unless printed.
struct Label {
  const char* name;
  std::int64_t index = -1;
};
std::string to_string(const Label& l);
std::string shape_string(const TensorView& t);
std::string shape_string(const std::int64_t* dims, std::int32_t ndim);
/// The view's strides in elements, "(1, 3)" (the C-contiguous ones when it has none).
std::string strides_string(const TensorView& t);

/// lr, wd, momentum, lamda: finite and >= 0. With index >= 0 the message names the entry
/// ("lrs[3]"); `what` (optional) says how the value was formed ("lr * lr_mult[3]").
void check_nonnegative(const char* op, const char* name, double v, std::int64_t index = -1,
                       const char* what = nullptr);
/// rescale_grad: finite.
void check_finite(const char* op, const char* name, double v);
/// nullopt -> +inf (off); otherwise must be > 0 (+inf allowed, 0 / negative / NaN rejected).
double checked_clip(const char* op, const std::optional<double>& clip);
/// The adaptive lambda's scalars: 0 <= ms_decay < 1 and eps > 0, both finite.
void check_ms_decay_eps(const char* op, double ms_decay, double eps);

enum class Access { kRead, kWrite };

/// The full check behind check_tensor: throws the error that describes the first problem found.
void check_tensor_slow(const char* op, const Label& label, const TensorView& t,
                       std::initializer_list<DType> dtypes, Access access, const TensorView* like,
                       const Label* like_label);

/// True when check_tensor would pass. Inline and branch-light: an aggregated call checks every
/// array of every tensor, and only a failing array needs the message-building path.
inline bool tensor_ok(const TensorView& t, std::initializer_list<DType> dtypes, Access access,
                      const TensorView* like) {
  if (t.ndim < 0 || t.ndim > TensorView::kMaxDims) return false;
  bool dtype_ok = false;
  for (DType d : dtypes) dtype_ok |= d == t.dtype;
  if (!dtype_ok || (access == Access::kWrite && t.read_only)) return false;
  if (like != nullptr) {
    if (t.ndim != like->ndim || t.device != like->device) return false;
    // Strided arrays (Note [dense layouts]) take the full check, which accepts a layout equal to
    // the weight's; the weight itself was checked dense.
    if (t.has_strides || like->has_strides) return false;
  } else if (t.has_strides) {
    return false;
  } else if (t.device.type == DeviceType::kCUDA && !FUSEDOPT_WITH_CUDA) {
    return false;
  }
  std::int64_t n = 1;
  bool shape_ok = true;
  for (std::int32_t i = 0; i < t.ndim; ++i) {
    const auto k = static_cast<std::size_t>(i);
    shape_ok &= t.shape[k] >= 0 && (like == nullptr || t.shape[k] == like->shape[k]);
    n *= t.shape[k];
  }
  return shape_ok && (t.data != nullptr || n == 0);
}

/// Checks one array: supported device, dtype one of `dtypes`, shape and device equal to `like` when
/// given, writable when written; the weight (`like` null) dense, every other array with the weight's
/// strides (Note [dense layouts] in tensor_view.h). Strided views (has_strides) take the full check.
inline void check_tensor(const char* op, const Label& label, const TensorView& t,
                         std::initializer_list<DType> dtypes, Access access, const TensorView* like,
                         const Label* like_label = nullptr) {
  if (!tensor_ok(t, dtypes, access, like)) check_tensor_slow(op, label, t, dtypes, access, like, like_label);
}

/// Rejects any overlap between an output range and any other range of the same call (a weight passed
/// twice, a grad aliasing its weight, a state aliasing another). O(n log n) in the number of arrays.
class OverlapChecker {
 public:
  void reserve(std::size_t n) {
    ranges_.reserve(n);
    labels_.reserve(n);
  }
  /// A dense array (Note [dense layouts]): its elements occupy [data, data + numel * itemsize).
  void add(const TensorView& t, const Label& label, Access access) {
    add_bytes(t.data, t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype)), label, access);
  }
  /// Any other operand the kernels read or write (row-sparse indices).
  void add_bytes(const void* data, std::int64_t nbytes, const Label& label, Access access) {
    if (nbytes <= 0) return;
    const auto b = reinterpret_cast<std::uintptr_t>(data);
    // Filled in place: building the struct on the stack and copying it stalls store forwarding.
    Range& r = ranges_.emplace_back();
    r.begin = b;
    r.end = b + static_cast<std::uintptr_t>(nbytes);
    r.label = static_cast<std::uint32_t>(labels_.size());
    r.output = access == Access::kWrite;
    labels_.push_back(label);
  }
  void check(const char* op);
  void clear() {
    ranges_.clear();
    labels_.clear();
  }

 private:
  // 24 bytes per array: the sort moves these; labels are only looked up to report an overlap.
  struct Range {
    std::uintptr_t begin, end;
    std::uint32_t label;
    bool output;
  };
  std::vector<Range> ranges_;
  std::vector<Label> labels_;
  // The ranges (in call order) of the last call that passed: a training loop passes the same arrays
  // every step, and identical ranges cannot overlap now if they did not then. Compared exactly.
  std::vector<Range> last_ok_;
};

/// Runs validated segments on the weight's device.
void launch(const UpdateKind& kind, const Segment* segs, std::int64_t nseg, const SharedScalars& s,
            Device device, Stream stream);
void launch_rows(const UpdateKind& kind, const RowSparseTask& task, const SharedScalars& s,
                 Device device, Stream stream);

}  // namespace fusedopt::detail
