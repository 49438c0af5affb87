// row_sparse.cpp — sgd_update / sgd_mom_update with a row-sparse gradient (SPEC.md §6): validation of the
// indices (range, uniqueness) and of every array before anything is written, then one row launch.
#include <cstdint>
#include <vector>

#include "check.h"
#include "fusedopt/sgd.h"
#include "update_api.h"

namespace fusedopt {
namespace {

using namespace detail;

void rsp_update(const char* op, TensorView& weight, const RowSparseView& grad, const TensorView* mom,
                const SgdParams& p, Stream stream, bool dry_run = false) {
  if (mom) check_nonnegative(op, "momentum", p.momentum);
  check_finite(op, "rescale_grad", p.rescale_grad);
  check_nonnegative(op, "lr", p.lr);
  check_nonnegative(op, "wd", p.wd);
  SharedScalars s;
  s.momentum = mom ? p.momentum : 0.0;
  s.rescale_grad = p.rescale_grad;
  s.clip = checked_clip(op, p.clip_gradient);

  const Label wl{"weight"}, gl{"grad.data"}, ml{"mom"};
  check_tensor(op, wl, weight, {DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64},
               Access::kWrite, nullptr);
  FUSEDOPT_CHECK(weight.ndim >= 1, ValueError, op,
                 ": a row-sparse gradient needs a weight with at least one dimension, got shape ",
                 shape_string(weight));
  // Rows are addressed as weight + r * row_len: only the C-contiguous layout has rows there.
  FUSEDOPT_CHECK(weight.is_contiguous(), ValueError, op,
                 ": a weight updated with a row-sparse gradient must be C-contiguous, got strides ",
                 strides_string(weight), " (fusedopt never copies an array it updates in place)");
  FUSEDOPT_CHECK(grad.ndim >= 0 && grad.ndim <= TensorView::kMaxDims, ValueError, op,
                 ": grad has ndim ", grad.ndim, "; expected 0 to ", int(TensorView::kMaxDims));
  bool same_shape = grad.ndim == weight.ndim &&
                    std::equal(weight.shape.begin(), weight.shape.begin() + weight.ndim,
                               grad.shape.begin());
  FUSEDOPT_CHECK(same_shape, ValueError, op, ": grad must have the shape of weight ",
                 shape_string(weight), ", got ", shape_string(grad.shape.data(), grad.ndim));
  // grad.data must be (num_indices,) + weight.shape[1:]
  TensorView expect_rows = weight;
  expect_rows.shape[0] = grad.num_indices;
  expect_rows.has_strides = false;
  const Label el{"(len(grad.indices),) + weight.shape[1:]"};
  check_tensor(op, gl, grad.data, {weight.dtype}, Access::kRead, &expect_rows, &el);
  if (mom) check_tensor(op, ml, *mom, {weight.dtype}, Access::kWrite, &weight, &wl);
  FUSEDOPT_CHECK(grad.num_indices == 0 || grad.indices != nullptr, ValueError, op,
                 ": grad.indices is null");

  const std::int64_t rows = weight.shape[0];
  const std::int64_t row_len = rows == 0 ? 0 : weight.numel() / rows;
  // Indices: in range and unique. Lazy updates need only a bitmap (rows / 8 bytes); the standard update
  // also needs row -> stored position. Both live in per-thread scratch reused across calls.
  thread_local std::vector<std::uint64_t> seen;
  thread_local std::vector<std::int64_t> row_to_k;
  const auto words = static_cast<std::size_t>(rows / 64 + 1);
  seen.assign(words, 0);
  if (!p.lazy_update) row_to_k.assign(static_cast<std::size_t>(rows), -1);
  for (std::int64_t k = 0; k < grad.num_indices; ++k) {
    const std::int64_t r = grad.indices[k];
    FUSEDOPT_CHECK(r >= 0 && r < rows, ValueError, op, ": grad.indices[", k, "] = ", r,
                   " is out of range for a weight with ", rows, " rows");
    std::uint64_t& word = seen[static_cast<std::size_t>(r) / 64];
    const std::uint64_t bit = std::uint64_t{1} << (r % 64);
    if (word & bit) {
      std::int64_t first = 0;
      while (grad.indices[first] != r) ++first;
      throw_error<ValueError>(op, ": grad.indices has row ", r, " twice (at ", first, " and ", k,
                              "); row-sparse indices must be unique");
    }
    word |= bit;
    if (!p.lazy_update) row_to_k[static_cast<std::size_t>(r)] = k;
  }
  OverlapChecker overlap;
  overlap.add(weight, wl, Access::kWrite);
  overlap.add(grad.data, gl, Access::kRead);
  if (mom) overlap.add(*mom, ml, Access::kWrite);
  overlap.check(op);

  if (dry_run || weight.numel() == 0 || (p.lazy_update && grad.num_indices == 0)) return;
  RowSparseTask t;
  t.whole.w = weight.data;
  t.whole.m = mom ? mom->data : nullptr;
  t.whole.lr = p.lr;
  t.whole.wd = p.wd;
  t.rows = rows;
  t.row_len = row_len;
  t.grad_rows = grad.data.data;
  t.indices = grad.indices;
  t.num_indices = grad.num_indices;
  t.row_to_k = p.lazy_update ? nullptr : row_to_k.data();
  t.lazy = p.lazy_update;
  launch_rows(UpdateKind{weight.dtype, RuleKind::kSgd, mom != nullptr, false}, t, s, weight.device,
              stream);
}

}  // namespace

void sgd_update(TensorView weight, const RowSparseView& grad, const SgdParams& p, Stream stream) {
  rsp_update("sgd_update", weight, grad, nullptr, p, stream);
}

void sgd_mom_update(TensorView weight, const RowSparseView& grad, TensorView mom, const SgdParams& p,
                    Stream stream) {
  rsp_update("sgd_mom_update", weight, grad, &mom, p, stream);
}

void check_sgd_args(TensorView weight, const RowSparseView& grad, const TensorView* mom,
                    const SgdParams& p) {
  rsp_update(mom ? "sgd_mom_update" : "sgd_update", weight, grad, mom, p, Stream{}, true);
}

}  // namespace fusedopt
