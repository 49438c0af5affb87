// dcasgd.h — delay-compensated asynchronous SGD (Zheng et al., ICML 2017, arXiv 1609.08326) update
// operators, in place. Two forms of the compensation's anchor (see DcasgdParams for the rule):
//  - MXNet's: `prev`, the weight before the last update, rewritten by every update (dcasgd_update);
//  - the paper's: `backup`, the weight a worker last pulled, only read (dcasgd_backup_update).
// Either form takes an optional mean square (float32 with a master, else the weight's dtype): given,
// lambda is adaptive (DC-ASGD-a), lam_t = lamda / sqrt(ms + eps); absent, it is the constant lamda.
#pragma once

#include <vector>

#include "fusedopt/params.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt {

/// DCASGD step on weight, prev (the previous weight), the momentum when `mom` is non-null and the
/// mean square when `mean_square` is non-null (adaptive lambda); all of the weight's dtype.
void dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                   const DcasgdParams& p, Stream stream = {});
void dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                   const TensorView* mean_square, const DcasgdParams& p, Stream stream = {});
/// Multi-precision DCASGD: float16/bfloat16 weight and grad; float32 master weight32, prev32 and
/// (optional) mom and mean_square. The master is updated and w = cast(master).
void mp_dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev32,
                      TensorView weight32, const DcasgdParams& p, Stream stream = {});
void mp_dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev32,
                      TensorView weight32, const TensorView* mean_square, const DcasgdParams& p,
                      Stream stream = {});

/// Aggregated DCASGD (not an MXNet operator): tensor k uses lrs[k] and wds[k]; momentum, lamda,
/// rescale_grad, clip_gradient, ms_decay and eps are shared. `moms` is empty (no momentum buffers;
/// momentum must then be 0) or has one buffer per weight; `mean_squares` is empty (constant lambda) or
/// has one per weight (adaptive). One validation of the whole call before any write, one parallel
/// region (CPU) or launch (CUDA) per weight dtype; results equal the per-tensor operators.
void multi_dcasgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& moms, const std::vector<TensorView>& prevs,
                         const MultiDcasgdParams& p, Stream stream = {});
void multi_dcasgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& moms, const std::vector<TensorView>& prevs,
                         const std::vector<TensorView>& mean_squares, const MultiDcasgdParams& p,
                         Stream stream = {});
/// Aggregated mp_dcasgd_update: float16/bfloat16 weights and grads, float32 prevs32, weights32 and
/// (optional, as above) moms and mean_squares.
void multi_mp_dcasgd_update(const std::vector<TensorView>& weights,
                            const std::vector<TensorView>& grads,
                            const std::vector<TensorView>& moms,
                            const std::vector<TensorView>& prevs32,
                            const std::vector<TensorView>& weights32, const MultiDcasgdParams& p,
                            Stream stream = {});
void multi_mp_dcasgd_update(const std::vector<TensorView>& weights,
                            const std::vector<TensorView>& grads,
                            const std::vector<TensorView>& moms,
                            const std::vector<TensorView>& prevs32,
                            const std::vector<TensorView>& weights32,
                            const std::vector<TensorView>& mean_squares, const MultiDcasgdParams& p,
                            Stream stream = {});

/// The paper's DCASGD step: the anchor is `backup` (the weight the pushing worker last pulled), only
/// read (a read-only view is accepted). Momentum when `mom` is non-null, adaptive lambda when
/// `mean_square` is non-null. With backup == weight the step is exactly SGD's (sgd_update /
/// sgd_mom_update), constant and adaptive. All operands of the weight's dtype.
void dcasgd_backup_update(TensorView weight, TensorView grad, TensorView backup, const TensorView* mom,
                          const TensorView* mean_square, const DcasgdParams& p, Stream stream = {});
/// Multi-precision dcasgd_backup_update: float16/bfloat16 weight and grad; float32 backup, weight32 and
/// (optional) mom and mean_square. The master is updated and w = cast(master).
void mp_dcasgd_backup_update(TensorView weight, TensorView grad, TensorView backup,
                             TensorView weight32, const TensorView* mom,
                             const TensorView* mean_square, const DcasgdParams& p,
                             Stream stream = {});
/// Aggregated dcasgd_backup_update over parallel lists (moms / mean_squares empty or one per weight),
/// as multi_dcasgd_update: one validation, one parallel region per weight dtype, bitwise equal to the
/// per-tensor operator.
void multi_dcasgd_backup_update(const std::vector<TensorView>& weights,
                                const std::vector<TensorView>& grads,
                                const std::vector<TensorView>& backups,
                                const std::vector<TensorView>& moms,
                                const std::vector<TensorView>& mean_squares,
                                const MultiDcasgdParams& p, Stream stream = {});
/// Aggregated mp_dcasgd_backup_update.
void multi_mp_dcasgd_backup_update(const std::vector<TensorView>& weights,
                                   const std::vector<TensorView>& grads,
                                   const std::vector<TensorView>& backups,
                                   const std::vector<TensorView>& weights32,
                                   const std::vector<TensorView>& moms,
                                   const std::vector<TensorView>& mean_squares,
                                   const MultiDcasgdParams& p, Stream stream = {});

/// Validates arguments exactly as dcasgd_update (or mp_dcasgd_update when `weight32` is non-null)
/// would, without writing anything.
void check_dcasgd_args(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                       const TensorView* weight32, const DcasgdParams& p);
void check_dcasgd_args(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                       const TensorView* weight32, const TensorView* mean_square,
                       const DcasgdParams& p);
/// Validates arguments exactly as dcasgd_backup_update (mp_dcasgd_backup_update when `weight32` is
/// non-null) would, without writing anything.
void check_dcasgd_backup_args(TensorView weight, TensorView grad, TensorView backup,
                              const TensorView* weight32, const TensorView* mom,
                              const TensorView* mean_square, const DcasgdParams& p);

}  // namespace fusedopt
