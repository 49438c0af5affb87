// params.h — hyper-parameters of the update operators. Defaults equal the Python ones (docs/SEMANTICS.md §1, §3, §7).
#pragma once

#include <optional>
#include <vector>

namespace fusedopt {

// The structs are aggregates: SgdParams{lr, wd, momentum, rescale_grad, clip_gradient, lazy_update}
// and DcasgdParams{lr, wd, momentum, lamda, rescale_grad, clip_gradient} initialise in this order.

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

/// Hyper-parameters of dcasgd_update (delay-compensated SGD, arXiv 1609.08326).
///   r = clip(rescale_grad * g, clip_gradient) + wd * w
///   d = r + lamda * r * r * (w - prev)
///   momentum: m = momentum * m - lr * d; step = m     no momentum: step = -lr * d
///   prev = w;  w = w + step
struct DcasgdParams {
  double lr = 0.1;
  double wd = 0.0;
  double momentum = 0.0;
  double lamda = 0.04;  ///< MXNet's spelling; finite and >= 0
  double rescale_grad = 1.0;
  std::optional<double> clip_gradient;
};

/// Hyper-parameters of the aggregated multi_* operators: one lr and wd per tensor, the rest shared.
struct MultiSgdParams {
  std::vector<double> lrs;
  std::vector<double> wds;
  double momentum = 0.0;
  double rescale_grad = 1.0;
  std::optional<double> clip_gradient;
};

/// Hyper-parameters of the aggregated DCASGD operators: one lr and wd per tensor, the rest shared.
struct MultiDcasgdParams {
  std::vector<double> lrs;
  std::vector<double> wds;
  double momentum = 0.0;
  double lamda = 0.04;
  double rescale_grad = 1.0;
  std::optional<double> clip_gradient;
};

}  // namespace fusedopt
