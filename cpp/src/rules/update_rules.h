// update_rules.h — the element rules of SGD and DCASGD, written once and used by every launcher
// (CPU per ISA, CUDA). Only <cmath>-free arithmetic and dtype.h; see Note [capability namespace].
// The NumPy float64 oracle of these formulas is tests/python/reference.py.
#pragma once

#include "fusedopt/dtype.h"

namespace fusedopt::detail {
inline namespace FUSEDOPT_CPU_CAPABILITY {

/// Scalars of one update in the compute type. `clip` is +inf when clipping is off: clip(x, +inf) == x
/// for every x, NaN and +-inf included, so the rule has no branch on it.
template <class Acc>
struct RuleScalars {
  Acc lr, wd, momentum, rescale_grad, clip, lamda;
};

/// clip(x, c): c if x > c, -c if x < -c, else x. Written with comparisons (not fmin/fmax, which drop
/// NaN) so a NaN passes through unchanged on every backend.
template <class Acc>
FUSEDOPT_HD Acc clip_value(Acc x, Acc c) {
  return x > c ? c : (x < -c ? -c : x);
}

/// r = clip(rescale_grad * g, clip) + wd * w   (weight decay is applied after clipping, never clipped)
/// kClip = false drops the clip for launchers that know clipping is off (clip == +inf): the result is
/// identical, and the compare-and-blend costs ~8 % of a core's bandwidth on the CPU.
template <class Acc, bool kClip = true>
FUSEDOPT_HD Acc preprocess_grad(Acc g, Acc w, const RuleScalars<Acc>& p) {
  Acc r = p.rescale_grad * g;
  if constexpr (kClip) r = clip_value(r, p.clip);
  return r + p.wd * w;
}

/// sgd:      w = w - lr * r
template <class Acc, bool kClip = true>
FUSEDOPT_HD void sgd_rule(Acc& w, Acc g, const RuleScalars<Acc>& p) {
  Acc r = preprocess_grad<Acc, kClip>(g, w, p);
  w = w - p.lr * r;
}

/// sgd_mom:  m = momentum * m - lr * r;  w = w + m     (lr lives inside the momentum buffer)
template <class Acc, bool kClip = true>
FUSEDOPT_HD void sgd_mom_rule(Acc& w, Acc& m, Acc g, const RuleScalars<Acc>& p) {
  Acc r = preprocess_grad<Acc, kClip>(g, w, p);
  m = p.momentum * m - p.lr * r;
  w = w + m;
}

/// dcasgd:   d = r + lamda * r * r * (w - prev);  prev = w;  w = w - lr * d
template <class Acc, bool kClip = true>
FUSEDOPT_HD void dcasgd_rule(Acc& w, Acc& prev, Acc g, const RuleScalars<Acc>& p) {
  Acc w0 = w;
  Acc r = preprocess_grad<Acc, kClip>(g, w0, p);
  Acc d = r + p.lamda * r * r * (w0 - prev);
  prev = w0;
  w = w0 - p.lr * d;
}

/// dcasgd_mom: d as above;  m = momentum * m - lr * d;  prev = w;  w = w + m
template <class Acc, bool kClip = true>
FUSEDOPT_HD void dcasgd_mom_rule(Acc& w, Acc& m, Acc& prev, Acc g, const RuleScalars<Acc>& p) {
  Acc w0 = w;
  Acc r = preprocess_grad<Acc, kClip>(g, w0, p);
  Acc d = r + p.lamda * r * r * (w0 - prev);
  m = p.momentum * m - p.lr * d;
  prev = w0;
  w = w0 + m;
}

}  // inline namespace FUSEDOPT_CPU_CAPABILITY
}  // namespace fusedopt::detail
