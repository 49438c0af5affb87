// dcasgd.cpp — DCASGD public operators: argument plumbing into detail::checked_update.
#include "fusedopt/dcasgd.h"

#include "check.h"
#include "update_api.h"

namespace fusedopt {
namespace {

using namespace detail;

void dcasgd(const char* op, bool master, TensorView* w, TensorView* g, const TensorView* mom,
            TensorView* prev, TensorView* w32, const DcasgdParams& p, Stream stream,
            bool dry_run = false) {
  if (mom) check_nonnegative(op, "momentum", p.momentum);
  FUSEDOPT_CHECK(mom != nullptr || p.momentum == 0.0, ValueError, op, ": momentum is ", p.momentum,
                 " but mom is None; pass a momentum buffer or momentum=0");
  check_nonnegative(op, "lamda", p.lamda);
  check_finite(op, "rescale_grad", p.rescale_grad);
  SharedScalars s;
  s.momentum = mom ? p.momentum : 0.0;
  s.rescale_grad = p.rescale_grad;
  s.clip = checked_clip(op, p.clip_gradient);
  s.lamda = p.lamda;
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
  auto same_count = [&](const char* name, std::size_t got) {
    FUSEDOPT_CHECK(got == n, ValueError, op, ": expected ", n, " ", name, " (one per weight), got ",
                   got);
  };
  same_count("grads", g.size());
  const bool mom = !m.empty();
  if (mom) same_count("moms", m.size());
  same_count(master ? "prevs32" : "prevs", prev.size());
  if (w32) same_count("weights32", w32->size());
  same_count("lrs", p.lrs.size());
  same_count("wds", p.wds.size());
  if (mom) check_nonnegative(op, "momentum", p.momentum);
  FUSEDOPT_CHECK(mom || p.momentum == 0.0, ValueError, op, ": momentum is ", p.momentum,
                 " but moms is empty; pass one momentum buffer per weight or momentum=0");
  check_nonnegative(op, "lamda", p.lamda);
  check_finite(op, "rescale_grad", p.rescale_grad);
  SharedScalars s;
  s.momentum = mom ? p.momentum : 0.0;
  s.rescale_grad = p.rescale_grad;
  s.clip = checked_clip(op, p.clip_gradient);
  s.lamda = p.lamda;
  OperandSet o;
  o.n = static_cast<std::int64_t>(n);
  o.weights = w.data();
  o.grads = g.data();
  o.moms = mom ? m.data() : nullptr;
  o.prevs = prev.data();
  o.masters = w32 ? w32->data() : nullptr;
  o.lrs = p.lrs.data();
  o.wds = p.wds.data();
  o.indexed = true;
  o.weight_name = "weights";
  o.grad_name = "grads";
  o.mom_name = "moms";
  o.prev_name = master ? "prevs32" : "prevs";
  o.master_name = "weights32";
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
