// dcasgd.cpp — DCASGD public operators: argument plumbing into detail::checked_update.
#include "fusedopt/dcasgd.h"

#include "check.h"
#include "update_api.h"

namespace fusedopt {
namespace {

using namespace detail;

/// The shared scalars of a DCASGD call, validated. `has_mom`: momentum buffers were given; without
/// them momentum must be 0 (`mom_word` names the missing argument in the message).
SharedScalars dcasgd_scalars(const char* op, bool has_mom, double momentum, double lamda,
                             double rescale_grad, const std::optional<double>& clip,
                             const char* missing_mom) {
  if (has_mom) check_nonnegative(op, "momentum", momentum);
  FUSEDOPT_CHECK(has_mom || momentum == 0.0, ValueError, op, ": momentum is ", momentum, " but ",
                 missing_mom);
  check_nonnegative(op, "lamda", lamda);
  check_finite(op, "rescale_grad", rescale_grad);
  SharedScalars s;
  s.momentum = has_mom ? momentum : 0.0;
  s.rescale_grad = rescale_grad;
  s.clip = checked_clip(op, clip);
  s.lamda = lamda;
  return s;
}

void dcasgd(const char* op, bool master, TensorView* w, TensorView* g, const TensorView* mom,
            TensorView* prev, TensorView* w32, const DcasgdParams& p, Stream stream,
            bool dry_run = false) {
  const SharedScalars s =
      dcasgd_scalars(op, mom != nullptr, p.momentum, p.lamda, p.rescale_grad, p.clip_gradient,
                     "mom is None; pass a momentum buffer or momentum=0");
  OperandSet o;
  o.n = 1;
  o.weights = w;
  o.grads = g;
  o.moms = mom;
  o.prevs = prev;
  o.masters = w32;
  o.lrs = &p.lr;
  o.wds = &p.wd;
  if (master) o.prev_name = "prev32";
  checked_update(op, RuleKind::kDcasgd, master, o, s, stream, dry_run);
}

void multi(const char* op, bool master, const std::vector<TensorView>& w,
           const std::vector<TensorView>& g, const std::vector<TensorView>& m,
           const std::vector<TensorView>& prev, const std::vector<TensorView>* w32,
           const MultiDcasgdParams& p, Stream stream) {
  const std::size_t n = w.size();
  const bool mom = !m.empty();
  check_list_sizes(op, n, {{"grads", g.size()},
                           {"moms", mom ? m.size() : n},
                           {master ? "prevs32" : "prevs", prev.size()},
                           {"weights32", w32 ? w32->size() : n},
                           {"lrs", p.lrs.size()},
                           {"wds", p.wds.size()}});
  const SharedScalars s =
      dcasgd_scalars(op, mom, p.momentum, p.lamda, p.rescale_grad, p.clip_gradient,
                     "moms is empty; pass one momentum buffer per weight or momentum=0");
  OperandSet o = list_operands(n, w.data(), g.data(), mom ? m.data() : nullptr, prev.data(),
                               w32 ? w32->data() : nullptr, p.lrs.data(), p.wds.data());
  if (master) o.prev_name = "prevs32";
  checked_update(op, RuleKind::kDcasgd, master, o, s, stream);
}

}  // namespace

void multi_dcasgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& moms, const std::vector<TensorView>& prevs,
                         const MultiDcasgdParams& p, Stream stream) {
  multi("multi_dcasgd_update", false, weights, grads, moms, prevs, nullptr, p, stream);
}

void multi_mp_dcasgd_update(const std::vector<TensorView>& weights,
                            const std::vector<TensorView>& grads,
                            const std::vector<TensorView>& moms,
                            const std::vector<TensorView>& prevs32,
                            const std::vector<TensorView>& weights32, const MultiDcasgdParams& p,
                            Stream stream) {
  multi("multi_mp_dcasgd_update", true, weights, grads, moms, prevs32, &weights32, p, stream);
}

void dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                   const DcasgdParams& p, Stream stream) {
  dcasgd("dcasgd_update", false, &weight, &grad, mom, &prev, nullptr, p, stream);
}

void mp_dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev32,
                      TensorView weight32, const DcasgdParams& p, Stream stream) {
  dcasgd("mp_dcasgd_update", true, &weight, &grad, mom, &prev32, &weight32, p, stream);
}

void check_dcasgd_args(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                       const TensorView* weight32, const DcasgdParams& p) {
  TensorView w32 = weight32 ? *weight32 : TensorView{};
  dcasgd(weight32 ? "mp_dcasgd_update" : "dcasgd_update", weight32 != nullptr, &weight, &grad, mom,
         &prev, weight32 ? &w32 : nullptr, p, Stream{}, true);
}

}  // namespace fusedopt
