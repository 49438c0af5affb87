// reference.h — a double-precision oracle of the update rules, written from docs/SEMANTICS.md §3, §6 and §7 and
// deliberately independent of cpp/src/rules: plain scalar code, no templates, no storage types. The
// tests compare every kernel against it (test_cpu_kernels.cpp) and check it against docs/SEMANTICS.md worked
// examples first (test_rules.cpp), so a shared misreading of docs/SEMANTICS.md would show up there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace fusedopt_test::ref {

/// Hyper-parameters of one update. `clip` = +inf means clipping is off (docs/SEMANTICS.md §3: clip(x, +inf) == x).
struct Hyper {
  double lr = 0.1;
  double wd = 0.0;
  double momentum = 0.0;
  double rescale_grad = 1.0;
  double clip = std::numeric_limits<double>::infinity();
  double lamda = 0.0;
};

/// docs/SEMANTICS.md notation: c if x > c, -c if x < -c, else x (a NaN passes through unchanged).
inline double clip(double x, double c) {
  if (x > c) return c;
  if (x < -c) return -c;
  return x;
}

/// r = clip(rg * g, c) + wd * w: the rescaled gradient is clipped, weight decay never is.
inline double grad_term(double g, double w, const Hyper& h) {
  return clip(h.rescale_grad * g, h.clip) + h.wd * w;
}

/// SGD (docs/SEMANTICS.md §3). `m` is null without momentum; with it, lr lives inside the momentum buffer.
inline void sgd(double& w, double* m, double g, const Hyper& h) {
  const double r = grad_term(g, w, h);
  if (m != nullptr) {
    *m = h.momentum * *m - h.lr * r;
    w += *m;
  } else {
    w -= h.lr * r;
  }
}

/// DCASGD (docs/SEMANTICS.md §7): d = r + lam * r * r * (w - prev), r including weight decay; prev = w before the
/// update.
inline void dcasgd(double& w, double* m, double& prev, double g, const Hyper& h) {
  const double r = grad_term(g, w, h);
  const double d = r + h.lamda * r * r * (w - prev);
  double step;
  if (m != nullptr) {
    *m = h.momentum * *m - h.lr * d;
    step = *m;
  } else {
    step = -h.lr * d;
  }
  prev = w;
  w += step;
}

/// One dense step over whole arrays. `m` / `prev` are empty when unused; `prev` selects DCASGD.
inline void dense_step(std::vector<double>& w, std::vector<double>& m, std::vector<double>& prev,
                       const std::vector<double>& g, bool dcasgd_rule, const Hyper& h) {
  const bool has_m = !m.empty();
  for (std::size_t i = 0; i < w.size(); ++i) {
    double* mi = has_m ? &m[i] : nullptr;
    if (dcasgd_rule)
      dcasgd(w[i], mi, prev[i], g[i], h);
    else
      sgd(w[i], mi, g[i], h);
  }
}

/// Row-sparse SGD step (docs/SEMANTICS.md §6) on a dense (rows x row_len) weight. Gradient row k (`data`, row-major)
/// belongs to weight row indices[k]. Lazy: only stored rows change. Standard: the dense rule with a zero
/// gradient on rows that are not stored (every row decays, every momentum row is updated).
inline void row_sparse_step(std::vector<double>& w, std::vector<double>& m, std::int64_t rows,
                            std::int64_t row_len, const std::vector<std::int64_t>& indices,
                            const std::vector<double>& data, bool lazy, const Hyper& h) {
  const bool has_m = !m.empty();
  std::vector<double> dense_g;
  if (!lazy) dense_g.assign(static_cast<std::size_t>(rows * row_len), 0.0);
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::int64_t row = indices[k];
    for (std::int64_t j = 0; j < row_len; ++j) {
      const auto src = static_cast<std::size_t>(static_cast<std::int64_t>(k) * row_len + j);
      const auto dst = static_cast<std::size_t>(row * row_len + j);
      if (lazy)
        sgd(w[dst], has_m ? &m[dst] : nullptr, data[src], h);
      else
        dense_g[dst] = data[src];
    }
  }
  if (!lazy)
    for (std::size_t i = 0; i < w.size(); ++i) sgd(w[i], has_m ? &m[i] : nullptr, dense_g[i], h);
}

}  // namespace fusedopt_test::ref
