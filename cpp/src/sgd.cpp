// sgd.cpp — the SGD family's public operators: argument plumbing into detail::checked_update.
#include "fusedopt/sgd.h"

#include <vector>

#include "check.h"
#include "update_api.h"

namespace fusedopt {
namespace {

using detail::OperandSet;
using detail::RuleKind;
using detail::SharedScalars;

SharedScalars shared_scalars(const char* op, double momentum, double rescale_grad,
                             const std::optional<double>& clip, bool uses_momentum) {
  if (uses_momentum) detail::check_nonnegative(op, "momentum", momentum);
  detail::check_finite(op, "rescale_grad", rescale_grad);
  SharedScalars s;
  s.momentum = uses_momentum ? momentum : 0.0;
  s.rescale_grad = rescale_grad;
  s.clip = detail::checked_clip(op, clip);
  return s;
}

void single(const char* op, bool master, TensorView* w, TensorView* g, TensorView* m,
            TensorView* w32, const SgdParams& p, Stream stream, bool dry_run = false) {
  SharedScalars s = shared_scalars(op, p.momentum, p.rescale_grad, p.clip_gradient, m != nullptr);
  OperandSet o;
  o.n = 1;
  o.weights = w;
  o.grads = g;
  o.moms = m;
  o.masters = w32;
  o.lrs = &p.lr;
  o.wds = &p.wd;
  detail::checked_update(op, RuleKind::kSgd, master, o, s, stream, dry_run);
}

void multi(const char* op, bool master, const std::vector<TensorView>& w,
           const std::vector<TensorView>& g, const std::vector<TensorView>* m,
           const std::vector<TensorView>* w32, const MultiSgdParams& p, Stream stream) {
  const std::size_t n = w.size();
  detail::check_list_sizes(op, n, {{"grads", g.size()},
                                   {"moms", m ? m->size() : n},
                                   {"weights32", w32 ? w32->size() : n},
                                   {"lrs", p.lrs.size()},
                                   {"wds", p.wds.size()}});
  SharedScalars s = shared_scalars(op, p.momentum, p.rescale_grad, p.clip_gradient, m != nullptr);
  OperandSet o = detail::list_operands(n, w.data(), g.data(), m ? m->data() : nullptr, nullptr,
                                       w32 ? w32->data() : nullptr, p.lrs.data(), p.wds.data());
  o.loss_scale = &p.loss_scale;
  detail::checked_update(op, RuleKind::kSgd, master, o, s, stream);
}

}  // namespace

void sgd_update(TensorView weight, TensorView grad, const SgdParams& p, Stream stream) {
  single("sgd_update", false, &weight, &grad, nullptr, nullptr, p, stream);
}

void sgd_mom_update(TensorView weight, TensorView grad, TensorView mom, const SgdParams& p,
                    Stream stream) {
  single("sgd_mom_update", false, &weight, &grad, &mom, nullptr, p, stream);
}

void mp_sgd_update(TensorView weight, TensorView grad, TensorView weight32, const SgdParams& p,
                   Stream stream) {
  single("mp_sgd_update", true, &weight, &grad, nullptr, &weight32, p, stream);
}

void mp_sgd_mom_update(TensorView weight, TensorView grad, TensorView mom, TensorView weight32,
                       const SgdParams& p, Stream stream) {
  single("mp_sgd_mom_update", true, &weight, &grad, &mom, &weight32, p, stream);
}

void multi_sgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                      const MultiSgdParams& p, Stream stream) {
  multi("multi_sgd_update", false, weights, grads, nullptr, nullptr, p, stream);
}

void multi_sgd_mom_update(const std::vector<TensorView>& weights,
                          const std::vector<TensorView>& grads, const std::vector<TensorView>& moms,
                          const MultiSgdParams& p, Stream stream) {
  multi("multi_sgd_mom_update", false, weights, grads, &moms, nullptr, p, stream);
}

void multi_mp_sgd_update(const std::vector<TensorView>& weights,
                         const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& weights32, const MultiSgdParams& p,
                         Stream stream) {
  multi("multi_mp_sgd_update", true, weights, grads, nullptr, &weights32, p, stream);
}

void multi_mp_sgd_mom_update(const std::vector<TensorView>& weights,
                             const std::vector<TensorView>& grads,
                             const std::vector<TensorView>& moms,
                             const std::vector<TensorView>& weights32, const MultiSgdParams& p,
                             Stream stream) {
  multi("multi_mp_sgd_mom_update", true, weights, grads, &moms, &weights32, p, stream);
}

void check_sgd_args(TensorView weight, TensorView grad, const TensorView* mom,
                    const TensorView* weight32, const SgdParams& p) {
  TensorView m = mom ? *mom : TensorView{};
  TensorView w32 = weight32 ? *weight32 : TensorView{};
  const char* op = weight32 ? (mom ? "mp_sgd_mom_update" : "mp_sgd_update")
                            : (mom ? "sgd_mom_update" : "sgd_update");
  single(op, weight32 != nullptr, &weight, &grad, mom ? &m : nullptr, weight32 ? &w32 : nullptr, p,
         Stream{}, true);
}

}  // namespace fusedopt
