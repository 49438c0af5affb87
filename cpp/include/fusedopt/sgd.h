// sgd.h — the SGD family of update operators (MXNet's names), in place on tensor views.
// Every function validates all of its arguments before it writes anything and throws
// fusedopt::ValueError / fusedopt::TypeError with a message naming the operator and the argument.
// The gradient is never written.
#pragma once

#include <vector>

#include "fusedopt/params.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt {

/// w = w - lr * (clip(rescale_grad * g) + wd * w). Any float dtype; grad of the weight's dtype.
void sgd_update(TensorView weight, TensorView grad, const SgdParams& p, Stream stream = {});
/// m = momentum * m - lr * r; w = w + m. `mom` has the weight's dtype.
void sgd_mom_update(TensorView weight, TensorView grad, TensorView mom, const SgdParams& p,
                    Stream stream = {});
/// float16/bfloat16 weight and grad, float32 master `weight32`: the master is updated, w = cast(master).
void mp_sgd_update(TensorView weight, TensorView grad, TensorView weight32, const SgdParams& p,
                   Stream stream = {});
/// As mp_sgd_update with a float32 momentum.
void mp_sgd_mom_update(TensorView weight, TensorView grad, TensorView mom, TensorView weight32,
                       const SgdParams& p, Stream stream = {});

/// Row-sparse gradients (docs/SEMANTICS.md §6): p.lazy_update selects lazy (stored rows only) or standard
/// (every row, zero gradient where not stored). Indices may be unsorted; duplicates and out-of-range
/// rows are a ValueError.
void sgd_update(TensorView weight, const RowSparseView& grad, const SgdParams& p, Stream stream = {});
void sgd_mom_update(TensorView weight, const RowSparseView& grad, TensorView mom, const SgdParams& p,
                    Stream stream = {});

/// Aggregated updates: tensor k uses lrs[k], wds[k]; momentum, rescale_grad and clip_gradient are
/// shared. Any number of tensors of any size (zero-size tensors are skipped), one parallel region.
/// Results equal the per-tensor operators exactly.
void multi_sgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                      const MultiSgdParams& p, Stream stream = {});
void multi_sgd_mom_update(const std::vector<TensorView>& weights,
                          const std::vector<TensorView>& grads, const std::vector<TensorView>& moms,
                          const MultiSgdParams& p, Stream stream = {});
void multi_mp_sgd_update(const std::vector<TensorView>& weights,
                         const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& weights32, const MultiSgdParams& p,
                         Stream stream = {});
void multi_mp_sgd_mom_update(const std::vector<TensorView>& weights,
                             const std::vector<TensorView>& grads,
                             const std::vector<TensorView>& moms,
                             const std::vector<TensorView>& weights32, const MultiSgdParams& p,
                             Stream stream = {});

/// Validates arguments exactly as the matching operator would (sgd_update when `mom` is null,
/// sgd_mom_update otherwise; the mp_ variant when `weight32` is non-null) and throws the same errors,
/// without writing anything. Used by reference paths that compute the update themselves.
void check_sgd_args(TensorView weight, TensorView grad, const TensorView* mom,
                    const TensorView* weight32, const SgdParams& p);
void check_sgd_args(TensorView weight, const RowSparseView& grad, const TensorView* mom,
                    const SgdParams& p);

}  // namespace fusedopt
