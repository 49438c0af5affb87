// params.h — hyper-parameters of the update operators. Defaults equal the Python ones (docs/SEMANTICS.md §1, §3, §7).
#pragma once

#include <optional>
#include <vector>

#include "fusedopt/tensor_view.h"

namespace fusedopt {

// The structs are aggregates: SgdParams{lr, wd, momentum, rescale_grad, clip_gradient, lazy_update}
// and DcasgdParams{lr, wd, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps} initialise in
// this order.

/// Hyper-parameters of sgd_update / sgd_mom_update and their mp_ variants.
///   r = clip(rescale_grad * g, clip_gradient) + wd * w
///   momentum:    m = momentum * m - lr * r;  w = w + m
///   no momentum: w = w - lr * r
struct SgdParams {
  double lr = 0.1;             ///< learning rate, finite and >= 0
  double wd = 0.0;             ///< weight decay, finite and >= 0 (never clipped)
  double momentum = 0.0;       ///< finite and >= 0; ignored by sgd_update
  double rescale_grad = 1.0;   ///< finite
  std::optional<double> clip_gradient;  ///< nullopt = off; else > 0 (+inf allowed = no clipping)
  bool lazy_update = true;     ///< row-sparse gradients only: touch stored rows only
};

/// Hyper-parameters of dcasgd_update and dcasgd_backup_update (delay-compensated SGD, Zheng et al.,
/// ICML 2017, arXiv 1609.08326). With anchor a = prev (MXNet's form) or a = backup (the paper's):
///   r = clip(rescale_grad * g, clip_gradient) + wd * w
///   adaptive (a mean square is given): ms = ms_decay * ms + (1 - ms_decay) * r * r   (first)
///                                      lam_t = lamda / sqrt(ms + eps)
///   constant (no mean square):         lam_t = lamda
///   d = r + lam_t * r * r * (w - a)
///   momentum: m = momentum * m - lr * d; step = m     no momentum: step = -lr * d
///   MXNet's form only: prev = w;   then w = w + step   (a backup is only read)
struct DcasgdParams {
  double lr = 0.1;
  double wd = 0.0;
  double momentum = 0.0;
  double lamda = 0.04;  ///< MXNet's spelling; finite and >= 0
  double rescale_grad = 1.0;
  std::optional<double> clip_gradient;
  double ms_decay = 0.95;  ///< adaptive only; finite, 0 <= ms_decay < 1 (1 would freeze ms)
  double eps = 1e-7;       ///< adaptive only; finite and > 0
};

/// Loss-scaling operands of the aggregated operators (torch.amp.GradScaler's `grad_scale` and
/// `found_inf`): optional float32 arrays of exactly one element on the weights' device, only read.
///   grad_scale: the gradients carry this factor; the call uses rescale_grad * (1 / *grad_scale)
///               (computed in double, then rounded to the compute type once) instead of rescale_grad.
///               The value is not validated (GradScaler keeps it a finite power of two).
///   found_inf:  when *found_inf != 0 the call writes nothing (weights, states, masters unchanged).
/// On CUDA the kernels read both in device code, so a call needs no host synchronisation; on the CPU
/// they are read once before the update.
struct LossScale {
  std::optional<TensorView> grad_scale;
  std::optional<TensorView> found_inf;
};

/// Hyper-parameters of the aggregated multi_* operators: one lr and wd per tensor, the rest shared.
struct MultiSgdParams {
  std::vector<double> lrs;
  std::vector<double> wds;
  double momentum = 0.0;
  double rescale_grad = 1.0;
  std::optional<double> clip_gradient;
  LossScale loss_scale;  ///< optional GradScaler operands (see LossScale)
};

/// Hyper-parameters of the aggregated DCASGD operators: one lr and wd per tensor, the rest shared.
struct MultiDcasgdParams {
  std::vector<double> lrs;
  std::vector<double> wds;
  double momentum = 0.0;
  double lamda = 0.04;
  double rescale_grad = 1.0;
  std::optional<double> clip_gradient;
  double ms_decay = 0.95;
  double eps = 1e-7;
  LossScale loss_scale;  ///< optional GradScaler operands (see LossScale)
};

}  // namespace fusedopt
