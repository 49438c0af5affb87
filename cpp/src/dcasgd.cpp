// dcasgd.cpp — DCASGD public operators (MXNet's previous-weight form and the paper's backup form,
// constant or adaptive lambda): argument plumbing into detail::checked_update.
#include "fusedopt/dcasgd.h"


#include "check.h"
#include "update_api.h"

namespace fusedopt {
namespace {

using namespace detail;

/// The scalars of a DCASGD call, validated. `has_mom`: momentum buffers were given; without them
/// momentum must be 0 (`missing_mom` names the missing argument in the message). ms_decay and eps are
/// validated whether or not a mean square is given, so a call's validity does not depend on it.
SharedScalars dcasgd_scalars(const char* op, bool has_mom, double momentum, double lamda,
                             double rescale_grad, const std::optional<double>& clip,
                             double ms_decay, double eps, const char* missing_mom) {
  if (has_mom) check_nonnegative(op, "momentum", momentum);
  FUSEDOPT_CHECK(has_mom || momentum == 0.0, ValueError, op, ": momentum is ", momentum, " but ",
                 missing_mom);
  check_nonnegative(op, "lamda", lamda);
  check_finite(op, "rescale_grad", rescale_grad);
  check_ms_decay_eps(op, ms_decay, eps);
  SharedScalars s;
  s.momentum = has_mom ? momentum : 0.0;
  s.rescale_grad = rescale_grad;
  s.clip = checked_clip(op, clip);
  s.lamda = lamda;
  s.ms_decay = ms_decay;
  s.eps = eps;
  return s;
}

RuleKind dcasgd_rule(bool backup, bool adaptive) {
  if (backup) return adaptive ? RuleKind::kBackupAdaptive : RuleKind::kBackup;
  return adaptive ? RuleKind::kDcasgdAdaptive : RuleKind::kDcasgd;
}

/// One tensor. `backup`: `anchor` is the paper's backup (read only), else MXNet's prev (written).
void single(const char* op, bool backup, bool master, TensorView* w, TensorView* g,
            const TensorView* mom, TensorView* anchor, const TensorView* ms, TensorView* w32,
            const DcasgdParams& p, Stream stream, bool dry_run = false) {
  const SharedScalars s = dcasgd_scalars(op, mom != nullptr, p.momentum, p.lamda, p.rescale_grad,
                                         p.clip_gradient, p.ms_decay, p.eps,
                                         "mom is None; pass a momentum buffer or momentum=0");
  OperandSet o;
  o.n = 1;
  o.weights = w;
  o.grads = g;
  o.moms = mom;
  o.prevs = anchor;
  o.mss = ms;
  o.masters = w32;
  o.lrs = &p.lr;
  o.wds = &p.wd;
  if (backup) o.prev_name = "backup";
  else if (master) o.prev_name = "prev32";
  checked_update(op, dcasgd_rule(backup, ms != nullptr), master, o, s, stream, dry_run);
}

/// Parallel lists; `w32` null without a master, `ms` empty for a constant lambda.
void multi(const char* op, bool backup, bool master, const std::vector<TensorView>& w,
           const std::vector<TensorView>& g, const std::vector<TensorView>& m,
           const std::vector<TensorView>& anchor, const std::vector<TensorView>& ms,
           const std::vector<TensorView>* w32, const MultiDcasgdParams& p, Stream stream) {
  const std::size_t n = w.size();
  const bool mom = !m.empty();
  const bool adaptive = !ms.empty();
  const char* anchor_name = backup ? "backups" : master ? "prevs32" : "prevs";
  check_list_sizes(op, n, {{"grads", g.size()},
                           {"moms", mom ? m.size() : n},
                           {anchor_name, anchor.size()},
                           {"mean_squares", adaptive ? ms.size() : n},
                           {"weights32", w32 ? w32->size() : n},
                           {"lrs", p.lrs.size()},
                           {"wds", p.wds.size()}});
  const SharedScalars s =
      dcasgd_scalars(op, mom, p.momentum, p.lamda, p.rescale_grad, p.clip_gradient, p.ms_decay,
                     p.eps, "moms is empty; pass one momentum buffer per weight or momentum=0");
  OperandSet o = list_operands(n, w.data(), g.data(), mom ? m.data() : nullptr, anchor.data(),
                               w32 ? w32->data() : nullptr, p.lrs.data(), p.wds.data());
  o.mss = adaptive ? ms.data() : nullptr;
  o.prev_name = anchor_name;
  o.loss_scale = &p.loss_scale;
  checked_update(op, dcasgd_rule(backup, adaptive), master, o, s, stream);
}

const std::vector<TensorView> kNone;

}  // namespace

void multi_dcasgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& moms, const std::vector<TensorView>& prevs,
                         const MultiDcasgdParams& p, Stream stream) {
  multi("multi_dcasgd_update", false, false, weights, grads, moms, prevs, kNone, nullptr, p, stream);
}

void multi_dcasgd_update(const std::vector<TensorView>& weights, const std::vector<TensorView>& grads,
                         const std::vector<TensorView>& moms, const std::vector<TensorView>& prevs,
                         const std::vector<TensorView>& mean_squares, const MultiDcasgdParams& p,
                         Stream stream) {
  multi("multi_dcasgd_update", false, false, weights, grads, moms, prevs, mean_squares, nullptr, p,
        stream);
}

void multi_mp_dcasgd_update(const std::vector<TensorView>& weights,
                            const std::vector<TensorView>& grads,
                            const std::vector<TensorView>& moms,
                            const std::vector<TensorView>& prevs32,
                            const std::vector<TensorView>& weights32, const MultiDcasgdParams& p,
                            Stream stream) {
  multi("multi_mp_dcasgd_update", false, true, weights, grads, moms, prevs32, kNone, &weights32, p,
        stream);
}

void multi_mp_dcasgd_update(const std::vector<TensorView>& weights,
                            const std::vector<TensorView>& grads,
                            const std::vector<TensorView>& moms,
                            const std::vector<TensorView>& prevs32,
                            const std::vector<TensorView>& weights32,
                            const std::vector<TensorView>& mean_squares, const MultiDcasgdParams& p,
                            Stream stream) {
  multi("multi_mp_dcasgd_update", false, true, weights, grads, moms, prevs32, mean_squares,
        &weights32, p, stream);
}

void multi_dcasgd_backup_update(const std::vector<TensorView>& weights,
                                const std::vector<TensorView>& grads,
                                const std::vector<TensorView>& backups,
                                const std::vector<TensorView>& moms,
                                const std::vector<TensorView>& mean_squares,
                                const MultiDcasgdParams& p, Stream stream) {
  multi("multi_dcasgd_backup_update", true, false, weights, grads, moms, backups, mean_squares,
        nullptr, p, stream);
}

void multi_mp_dcasgd_backup_update(const std::vector<TensorView>& weights,
                                   const std::vector<TensorView>& grads,
                                   const std::vector<TensorView>& backups,
                                   const std::vector<TensorView>& weights32,
                                   const std::vector<TensorView>& moms,
                                   const std::vector<TensorView>& mean_squares,
                                   const MultiDcasgdParams& p, Stream stream) {
  multi("multi_mp_dcasgd_backup_update", true, true, weights, grads, moms, backups, mean_squares,
        &weights32, p, stream);
}

void dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                   const DcasgdParams& p, Stream stream) {
  single("dcasgd_update", false, false, &weight, &grad, mom, &prev, nullptr, nullptr, p, stream);
}

void dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                   const TensorView* mean_square, const DcasgdParams& p, Stream stream) {
  single("dcasgd_update", false, false, &weight, &grad, mom, &prev, mean_square, nullptr, p, stream);
}

void mp_dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev32,
                      TensorView weight32, const DcasgdParams& p, Stream stream) {
  single("mp_dcasgd_update", false, true, &weight, &grad, mom, &prev32, nullptr, &weight32, p, stream);
}

void mp_dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev32,
                      TensorView weight32, const TensorView* mean_square, const DcasgdParams& p,
                      Stream stream) {
  single("mp_dcasgd_update", false, true, &weight, &grad, mom, &prev32, mean_square, &weight32, p,
         stream);
}

void dcasgd_backup_update(TensorView weight, TensorView grad, TensorView backup, const TensorView* mom,
                          const TensorView* mean_square, const DcasgdParams& p, Stream stream) {
  single("dcasgd_backup_update", true, false, &weight, &grad, mom, &backup, mean_square, nullptr, p,
         stream);
}

void mp_dcasgd_backup_update(TensorView weight, TensorView grad, TensorView backup,
                             TensorView weight32, const TensorView* mom,
                             const TensorView* mean_square, const DcasgdParams& p, Stream stream) {
  single("mp_dcasgd_backup_update", true, true, &weight, &grad, mom, &backup, mean_square, &weight32,
         p, stream);
}

void check_dcasgd_args(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                       const TensorView* weight32, const DcasgdParams& p) {
  check_dcasgd_args(weight, grad, mom, prev, weight32, nullptr, p);
}

void check_dcasgd_args(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                       const TensorView* weight32, const TensorView* mean_square,
                       const DcasgdParams& p) {
  TensorView w32 = weight32 ? *weight32 : TensorView{};
  single(weight32 ? "mp_dcasgd_update" : "dcasgd_update", false, weight32 != nullptr, &weight, &grad,
         mom, &prev, mean_square, weight32 ? &w32 : nullptr, p, Stream{}, true);
}

void check_dcasgd_backup_args(TensorView weight, TensorView grad, TensorView backup,
                              const TensorView* weight32, const TensorView* mom,
                              const TensorView* mean_square, const DcasgdParams& p) {
  TensorView w32 = weight32 ? *weight32 : TensorView{};
  single(weight32 ? "mp_dcasgd_backup_update" : "dcasgd_backup_update", true, weight32 != nullptr,
         &weight, &grad, mom, &backup, mean_square, weight32 ? &w32 : nullptr, p, Stream{}, true);
}

}  // namespace fusedopt
