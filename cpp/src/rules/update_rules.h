// update_rules.h — the element rules of SGD and DCASGD, written once and used by every launcher
// (CPU per ISA, CUDA). Only <cmath>-free arithmetic (plus rule_sqrt) and dtype.h; see Note
// [capability namespace]. The NumPy float64 oracle of these formulas is tests/python/reference.py.
#pragma once

#include "engine.h"
#include "fusedopt/dtype.h"

namespace fusedopt::detail {
inline namespace FUSEDOPT_CPU_CAPABILITY {

/// Scalars of one update in the compute type. `clip` is +inf when clipping is off: clip(x, +inf) == x
/// for every x, NaN and +-inf included, so the rule has no branch on it. Adaptive DCASGD only:
/// ms_decay, ms_gain = 1 - ms_decay (rounded once, in double, by the launcher), eps.
template <class Acc>
struct RuleScalars {
  Acc lr, wd, momentum, rescale_grad, clip, lamda, ms_decay, ms_gain, eps;
};

/// RuleScalars of one segment (lr, wd) and the shared scalars of its call, in the compute type.
template <class Acc>
RuleScalars<Acc> make_rule_scalars(double lr, double wd, const SharedScalars& s) {
  return RuleScalars<Acc>{static_cast<Acc>(lr),           static_cast<Acc>(wd),
                          static_cast<Acc>(s.momentum),   static_cast<Acc>(s.rescale_grad),
                          static_cast<Acc>(s.clip),       static_cast<Acc>(s.lamda),
                          static_cast<Acc>(s.ms_decay),   static_cast<Acc>(1.0 - s.ms_decay),
                          static_cast<Acc>(s.eps)};
}

/// Correctly rounded square root of the compute type (IEEE on every backend, so every launcher gets
/// the same bits). Specialised for float and double here, and for the CPU's 8-float vectors in
/// cpu/kernels.cpp.
template <class Acc>
FUSEDOPT_HD Acc rule_sqrt(Acc x);
#if defined(__CUDACC__)
template <>
FUSEDOPT_HD float rule_sqrt<float>(float x) { return sqrtf(x); }
template <>
FUSEDOPT_HD double rule_sqrt<double>(double x) { return sqrt(x); }
#else
template <>
FUSEDOPT_HD float rule_sqrt<float>(float x) { return __builtin_sqrtf(x); }
template <>
FUSEDOPT_HD double rule_sqrt<double>(double x) { return __builtin_sqrt(x); }
#endif

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

/// The DCASGD direction at weight w with anchor a (MXNet's previous weight, or the paper's backup):
///   constant:  lam_t = lamda
///   adaptive:  ms = ms_decay * ms + (1 - ms_decay) * r * r   (updated first)
///              lam_t = lamda / sqrt(ms + eps)
///   d = r + lam_t * r * r * (w - a)
/// With a == w the compensation term is exactly 0 and d == r (SGD's step), for finite lam_t * r * r.
template <class Acc, bool kClip, bool kAdaptive>
FUSEDOPT_HD Acc dcasgd_direction(Acc w, Acc a, Acc& ms, Acc g, const RuleScalars<Acc>& p) {
  Acc r = preprocess_grad<Acc, kClip>(g, w, p);
  Acc lam = p.lamda;
  if constexpr (kAdaptive) {
    ms = p.ms_decay * ms + p.ms_gain * r * r;
    lam = p.lamda / rule_sqrt(ms + p.eps);
  }
  return r + lam * r * r * (w - a);
}

/// dcasgd:   d as above (anchor prev);  prev = w;  w = w - lr * d
template <class Acc, bool kClip = true, bool kAdaptive = false>
FUSEDOPT_HD void dcasgd_rule(Acc& w, Acc& prev, Acc& ms, Acc g, const RuleScalars<Acc>& p) {
  Acc w0 = w;
  Acc d = dcasgd_direction<Acc, kClip, kAdaptive>(w0, prev, ms, g, p);
  prev = w0;
  w = w0 - p.lr * d;
}

/// dcasgd_mom: d as above;  m = momentum * m - lr * d;  prev = w;  w = w + m
template <class Acc, bool kClip = true, bool kAdaptive = false>
FUSEDOPT_HD void dcasgd_mom_rule(Acc& w, Acc& m, Acc& prev, Acc& ms, Acc g,
                                 const RuleScalars<Acc>& p) {
  Acc w0 = w;
  Acc d = dcasgd_direction<Acc, kClip, kAdaptive>(w0, prev, ms, g, p);
  m = p.momentum * m - p.lr * d;
  prev = w0;
  w = w0 + m;
}

/// dcasgd_backup: d as above with the backup as anchor (only read);  w = w - lr * d
template <class Acc, bool kClip = true, bool kAdaptive = false>
FUSEDOPT_HD void dcasgd_backup_rule(Acc& w, Acc backup, Acc& ms, Acc g, const RuleScalars<Acc>& p) {
  Acc d = dcasgd_direction<Acc, kClip, kAdaptive>(w, backup, ms, g, p);
  w = w - p.lr * d;
}

/// dcasgd_backup_mom: d as above;  m = momentum * m - lr * d;  w = w + m
template <class Acc, bool kClip = true, bool kAdaptive = false>
FUSEDOPT_HD void dcasgd_backup_mom_rule(Acc& w, Acc& m, Acc backup, Acc& ms, Acc g,
                                        const RuleScalars<Acc>& p) {
  Acc d = dcasgd_direction<Acc, kClip, kAdaptive>(w, backup, ms, g, p);
  m = p.momentum * m - p.lr * d;
  w = w + m;
}

/// The rule R on one element, the form every launcher calls. `anchor` (prev or backup) is written
/// only when rule_writes_anchor(R); `ms` only when rule_adaptive(R); `m` only with kMom. Unused
/// operands are ignored (launchers pass zeros).
template <class Acc, RuleKind R, bool kMom, bool kClip>
FUSEDOPT_HD void apply_rule(Acc& w, Acc& m, Acc& anchor, Acc& ms, Acc g, const RuleScalars<Acc>& p) {
  constexpr bool kAdaptive = rule_adaptive(R);
  if constexpr (R == RuleKind::kSgd) {
    if constexpr (kMom) sgd_mom_rule<Acc, kClip>(w, m, g, p);
    else sgd_rule<Acc, kClip>(w, g, p);
  } else if constexpr (rule_writes_anchor(R)) {
    if constexpr (kMom) dcasgd_mom_rule<Acc, kClip, kAdaptive>(w, m, anchor, ms, g, p);
    else dcasgd_rule<Acc, kClip, kAdaptive>(w, anchor, ms, g, p);
  } else {
    if constexpr (kMom) dcasgd_backup_mom_rule<Acc, kClip, kAdaptive>(w, m, anchor, ms, g, p);
    else dcasgd_backup_rule<Acc, kClip, kAdaptive>(w, anchor, ms, g, p);
  }
}

}  // inline namespace FUSEDOPT_CPU_CAPABILITY
}  // namespace fusedopt::detail
