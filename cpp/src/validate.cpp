// validate.cpp — shared argument checks and the device switch between CPU and CUDA launchers.
#include "validate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "check.h"

namespace fusedopt {

void TensorView::set_shape(const std::int64_t* dims, std::int32_t n) {
  FUSEDOPT_CHECK(n >= 0 && n <= kMaxDims, ValueError, "fusedopt supports arrays of at most ",
                 int(kMaxDims), " dimensions (got ", n, ")");
  ndim = n;
  for (std::int32_t i = 0; i < n; ++i) shape[static_cast<std::size_t>(i)] = dims[i];
  has_strides = false;
}

std::int64_t TensorView::stride(std::int32_t i) const {
  if (has_strides) return strides[static_cast<std::size_t>(i)];
  std::int64_t s = 1;
  for (std::int32_t j = ndim - 1; j > i; --j) s *= shape[static_cast<std::size_t>(j)];
  return s;
}

bool TensorView::is_contiguous() const {
  if (!has_strides) return true;
  std::int64_t expected = 1;
  for (std::int32_t i = ndim - 1; i >= 0; --i) {
    auto k = static_cast<std::size_t>(i);
    if (shape[k] == 0) return true;  // no elements: any strides describe the same (empty) array
    if (shape[k] != 1 && strides[k] != expected) return false;
    expected *= shape[k];
  }
  return true;
}

bool TensorView::is_dense() const {
  if (!has_strides || is_contiguous()) return true;
  if (ndim < 0 || ndim > kMaxDims) return false;
  // Dimensions of size > 1, by increasing stride: each stride must be the product of the sizes of the
  // dimensions before it (1 for the first). Equal strides, gaps, 0 and negatives all fail.
  std::array<std::int32_t, kMaxDims> dims{};
  std::int32_t n = 0;
  for (std::int32_t i = 0; i < ndim; ++i) {
    const auto k = static_cast<std::size_t>(i);
    if (shape[k] == 0) return true;  // no elements
    if (shape[k] != 1) dims[static_cast<std::size_t>(n++)] = i;
  }
  // Insertion sort by stride: at most kMaxDims items (std::sort here draws a false -Warray-bounds
  // from GCC 12 for its unrolled small-range path).
  for (std::int32_t j = 1; j < n; ++j) {
    const std::int32_t d = dims[static_cast<std::size_t>(j)];
    std::int32_t i = j;
    for (; i > 0 && strides[static_cast<std::size_t>(dims[static_cast<std::size_t>(i - 1)])] >
                        strides[static_cast<std::size_t>(d)];
         --i)
      dims[static_cast<std::size_t>(i)] = dims[static_cast<std::size_t>(i - 1)];
    dims[static_cast<std::size_t>(i)] = d;
  }
  std::int64_t expected = 1;
  for (std::int32_t j = 0; j < n; ++j) {
    const auto k = static_cast<std::size_t>(dims[static_cast<std::size_t>(j)]);
    if (strides[k] != expected) return false;
    expected *= shape[k];  // no overflow: bounded by numel
  }
  return true;
}

bool TensorView::same_layout(const TensorView& o) const {
  if (!has_strides && !o.has_strides) return true;
  for (std::int32_t i = 0; i < ndim; ++i)
    if (shape[static_cast<std::size_t>(i)] == 0) return true;
  for (std::int32_t i = 0; i < ndim; ++i)
    if (shape[static_cast<std::size_t>(i)] != 1 && stride(i) != o.stride(i)) return false;
  return true;
}

namespace detail {

std::string to_string(const Label& l) {
  return l.index < 0 ? std::string(l.name) : str_cat(l.name, "[", l.index, "]");
}

std::string shape_string(const std::int64_t* dims, std::int32_t ndim) {
  std::string s = "(";
  for (std::int32_t i = 0; i < ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  if (ndim == 1) s += ",";
  return s + ")";
}

std::string shape_string(const TensorView& t) { return shape_string(t.shape.data(), t.ndim); }

std::string strides_string(const TensorView& t) {
  std::array<std::int64_t, TensorView::kMaxDims> s{};
  for (std::int32_t i = 0; i < t.ndim; ++i) s[static_cast<std::size_t>(i)] = t.stride(i);
  return shape_string(s.data(), t.ndim);
}

void check_nonnegative(const char* op, const char* name, double v, std::int64_t index,
                       const char* what) {
  if (std::isfinite(v) && v >= 0.0) return;
  throw_error<ValueError>(op, ": ", to_string(Label{name, index}), " must be a finite number >= 0, got ",
                          v, what != nullptr ? str_cat(" (", what, ")") : std::string());
}

void check_finite(const char* op, const char* name, double v) {
  FUSEDOPT_CHECK(std::isfinite(v), ValueError, op, ": ", name, " must be finite, got ", v);
}

double checked_clip(const char* op, const std::optional<double>& clip) {
  if (!clip) return std::numeric_limits<double>::infinity();
  FUSEDOPT_CHECK(*clip > 0.0, ValueError, op,
                 ": clip_gradient must be None (no clipping) or > 0, got ", *clip);
  return *clip;
}

void check_ms_decay_eps(const char* op, double ms_decay, double eps) {
  FUSEDOPT_CHECK(std::isfinite(ms_decay) && ms_decay >= 0.0 && ms_decay < 1.0, ValueError, op,
                 ": ms_decay must be a finite number in [0, 1), got ", ms_decay);
  FUSEDOPT_CHECK(std::isfinite(eps) && eps > 0.0, ValueError, op,
                 ": eps must be a finite number > 0, got ", eps);
}

namespace {
std::string dtype_list(std::initializer_list<DType> dtypes) {
  std::string s;
  for (DType d : dtypes) {
    if (!s.empty()) s += " or ";
    s += dtype_name(d);
  }
  return s;
}

bool in(DType d, std::initializer_list<DType> dtypes) {
  return std::find(dtypes.begin(), dtypes.end(), d) != dtypes.end();
}

const char* device_name(DeviceType t) {
  switch (t) {
    case DeviceType::kCPU: return "cpu";
    case DeviceType::kCUDA: return "cuda";
    case DeviceType::kCUDAHost: return "cuda_host";
    case DeviceType::kCUDAManaged: return "cuda_managed";
  }
  return "unknown";
}

std::string device_string(const Device& d) { return str_cat(device_name(d.type), ":", d.id); }
}  // namespace

void check_tensor_slow(const char* op, const Label& label, const TensorView& t,
                       std::initializer_list<DType> dtypes, Access access, const TensorView* like,
                       const Label* like_label) {
  // The view's fields are public: never trust ndim before indexing shape[] with it.
  FUSEDOPT_CHECK(t.ndim >= 0 && t.ndim <= TensorView::kMaxDims, ValueError, op, ": ",
                 to_string(label), " has ndim ", t.ndim, "; expected 0 to ",
                 int(TensorView::kMaxDims));
  FUSEDOPT_CHECK(in(t.dtype, dtypes), TypeError, op, ": ", to_string(label), " must have dtype ",
                 dtype_list(dtypes), ", got ", dtype_name(t.dtype));
  for (std::int32_t i = 0; i < t.ndim; ++i)
    FUSEDOPT_CHECK(t.shape[static_cast<std::size_t>(i)] >= 0, ValueError, op, ": ",
                   to_string(label), " has a negative dimension in shape ", shape_string(t));
  if (like != nullptr) {
    bool same = t.ndim == like->ndim &&
                std::equal(t.shape.begin(), t.shape.begin() + t.ndim, like->shape.begin());
    FUSEDOPT_CHECK(same, ValueError, op, ": ", to_string(label), " must have the shape of ",
                   to_string(*like_label), " ", shape_string(*like), ", got ", shape_string(t));
    FUSEDOPT_CHECK(t.device == like->device, ValueError, op, ": ", to_string(label),
                   " must be on the device of ", to_string(*like_label), " (",
                   device_string(like->device), "), got ", device_string(t.device));
  } else {
#if !FUSEDOPT_WITH_CUDA
    FUSEDOPT_CHECK(t.device.type != DeviceType::kCUDA, ValueError, op, ": ", to_string(label),
                   " is on ", device_string(t.device), " but fusedopt was built without CUDA");
#endif
  }
  if (like == nullptr) {
    FUSEDOPT_CHECK(t.is_dense(), ValueError, op, ": ", to_string(label),
                   " must be dense: C-contiguous, or a permutation of that layout (a transposed "
                   "array, channels_last) with positive strides and no gaps or overlaps; got "
                   "strides ", strides_string(t),
                   " (fusedopt never copies an array it updates in place)");
  } else {
    FUSEDOPT_CHECK(t.same_layout(*like), ValueError, op, ": ", to_string(label),
                   " must have the strides of ", to_string(*like_label), " ",
                   strides_string(*like), ", got ", strides_string(t),
                   " (the update runs over the memory of all its arrays as one flat range; "
                   "fusedopt never copies an array it updates in place)");
  }
  FUSEDOPT_CHECK(t.data != nullptr || t.numel() == 0, ValueError, op, ": ", to_string(label),
                 " has a null data pointer");
  if (access == Access::kWrite)
    FUSEDOPT_CHECK(!t.read_only, ValueError, op, ": ", to_string(label),
                   " is read-only but is updated in place");
}

void OverlapChecker::check(const char* op) {
  auto same = [](const Range& a, const Range& b) {
    return a.begin == b.begin && a.end == b.end && a.output == b.output;
  };
  if (ranges_.size() == last_ok_.size() &&
      std::equal(ranges_.begin(), ranges_.end(), last_ok_.begin(), same))
    return;
  last_ok_.clear();
  const std::vector<Range> in_order = ranges_;
  std::sort(ranges_.begin(), ranges_.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  // Sorted by start, any earlier range that overlaps r ends after r.begin. Track the furthest end of
  // all ranges and of output ranges seen so far.
  const Range* far_all = nullptr;
  const Range* far_out = nullptr;
  for (const Range& r : ranges_) {
    const Range* hit = nullptr;
    if (far_out != nullptr && r.begin < far_out->end) hit = far_out;
    else if (r.output && far_all != nullptr && r.begin < far_all->end) hit = far_all;
    if (hit != nullptr)
      throw_error<ValueError>(op, ": ", to_string(labels_[r.label]), " overlaps ",
                              to_string(labels_[hit->label]),
                              " in memory; an array that is updated in place must not share "
                              "memory with any other argument");
    if (far_all == nullptr || r.end > far_all->end) far_all = &r;
    if (r.output && (far_out == nullptr || r.end > far_out->end)) far_out = &r;
  }
  last_ok_ = in_order;
}

void launch(const UpdateKind& kind, const Segment* segs, std::int64_t nseg, const SharedScalars& s,
            Device device, Stream stream) {
  if (device.host_accessible()) {
    cpu_kernels().update(kind, segs, nseg, s);
    return;
  }
#if FUSEDOPT_WITH_CUDA
  cuda_update(kind, segs, nseg, s, device, stream);
#else
  (void)stream;
  throw_error<ValueError>("fusedopt was built without CUDA");
#endif
}

void launch_rows(const UpdateKind& kind, const RowSparseTask& task, const SharedScalars& s,
                 Device device, Stream stream) {
  if (device.host_accessible()) {
    cpu_kernels().update_rows(kind, task, s);
    return;
  }
#if FUSEDOPT_WITH_CUDA
  cuda_update_rows(kind, task, s, device, stream);
#else
  (void)stream;
  throw_error<ValueError>("fusedopt was built without CUDA");
#endif
}

}  // namespace detail
}  // namespace fusedopt
