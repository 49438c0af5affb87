// dcasgd.h — delay-compensated asynchronous SGD (arXiv 1609.08326) update operators, in place.
#pragma once

#include <vector>

#include "fusedopt/params.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt {

/// DCASGD step on weight, prev (the previous weight) and, when `mom` is non-null, the momentum; all of
/// the weight's dtype. See DcasgdParams for the rule.
void dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                   const DcasgdParams& p, Stream stream = {});
/// Multi-precision DCASGD: float16/bfloat16 weight and grad; float32 master weight32, prev32 and
/// (optional) mom. The master is updated and w = cast(master).
void mp_dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev32,
                      TensorView weight32, const DcasgdParams& p, Stream stream = {});

/// Aggregated DCASGD (not an MXNet operator): tensor k uses lrs[k] and wds[k]; momentum, lamda,
/// rescale_grad and clip_gradient are shared. `moms` is empty (no momentum buffers; momentum must then
/// be 0) or has one buffer per weight. One validation of the whole call before any write, one
/// parallel region (CPU) or launch (CUDA) per weight dtype; results equal the per-tensor operators.
void multi_dcasgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& moms, const std::vector<TensorView>& prevs,
                         const MultiDcasgdParams& p, Stream stream = {});
/// Aggregated mp_dcasgd_update: float16/bfloat16 weights and grads, float32 prevs32, weights32 and
/// (optional, as above) moms.
void multi_mp_dcasgd_update(const std::vector<TensorView>& weights,
                            const std::vector<TensorView>& grads,
                            const std::vector<TensorView>& moms,
                            const std::vector<TensorView>& prevs32,
                            const std::vector<TensorView>& weights32, const MultiDcasgdParams& p,
                            Stream stream = {});

/// Validates arguments exactly as dcasgd_update (or mp_dcasgd_update when `weight32` is non-null)
/// would, without writing anything.
void check_dcasgd_args(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                       const TensorView* weight32, const DcasgdParams& p);

}  // namespace fusedopt
