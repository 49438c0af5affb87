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

}  // namespace

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
