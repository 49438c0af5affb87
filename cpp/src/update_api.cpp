// update_api.cpp — validation of a whole call (every tensor of an aggregated call included) before the
// first write, then one kernel launch per weight dtype.
#include "update_api.h"

#include <algorithm>
#include <vector>

#include "check.h"

namespace fusedopt::detail {

OperandSet list_operands(std::size_t n, const TensorView* weights, const TensorView* grads,
                         const TensorView* moms, const TensorView* prevs, const TensorView* masters,
                         const double* lrs, const double* wds) {
  OperandSet o;
  o.n = static_cast<std::int64_t>(n);
  o.weights = weights;
  o.grads = grads;
  o.moms = moms;
  o.prevs = prevs;
  o.masters = masters;
  o.lrs = lrs;
  o.wds = wds;
  o.indexed = true;
  o.weight_name = "weights";
  o.grad_name = "grads";
  o.mom_name = "moms";
  o.prev_name = "prevs";
  o.ms_name = "mean_squares";
  o.master_name = "weights32";
  return o;
}

void check_list_sizes(const char* op, std::size_t n, std::initializer_list<ListSize> lists) {
  for (const ListSize& l : lists)
    FUSEDOPT_CHECK(l.size == n, ValueError, op, ": expected ", n, " ", l.name,
                   " (one per weight), got ", l.size);
}

void checked_update(const char* op, RuleKind rule, bool master, const OperandSet& o,
                    const SharedScalars& shared, Stream stream, bool dry_run) {
  const bool mom = o.moms != nullptr;
  const bool dca = rule_has_anchor(rule);
  // MXNet's previous weight is rewritten; a backup is only read (it may be a read-only array).
  const Access anchor_access = rule_writes_anchor(rule) ? Access::kWrite : Access::kRead;
  const bool adaptive = rule_adaptive(rule);
  auto label = [&](const char* name, std::int64_t k) { return Label{name, o.indexed ? k : -1}; };

  // Per-thread scratch reused across calls: no allocation (and no page faults) on the hot path.
  thread_local OverlapChecker overlap;
  thread_local std::vector<Segment> segs;
  overlap.clear();
  overlap.reserve(static_cast<std::size_t>(o.n) * 6);
  const Device device = o.n > 0 ? o.weights[0].device : Device{};
  const Label first_weight = label(o.weight_name, 0);
  for (std::int64_t k = 0; k < o.n; ++k) {
    const TensorView& w = o.weights[k];
    const Label wl = label(o.weight_name, k);
    if (master)
      check_tensor(op, wl, w, {DType::kFloat16, DType::kBFloat16}, Access::kWrite, nullptr);
    else
      check_tensor(op, wl, w, {DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64},
                   Access::kWrite, nullptr);
    FUSEDOPT_CHECK(w.device == device, ValueError, op, ": ", to_string(wl),
                   " is on a different device than ", to_string(first_weight),
                   "; all arrays of one call must be on one device");
    const DType state_dtype = master ? DType::kFloat32 : w.dtype;
    check_tensor(op, label(o.grad_name, k), o.grads[k], {w.dtype}, Access::kRead, &w, &wl);
    if (mom) check_tensor(op, label(o.mom_name, k), o.moms[k], {state_dtype}, Access::kWrite, &w, &wl);
    if (dca) check_tensor(op, label(o.prev_name, k), o.prevs[k], {state_dtype}, anchor_access, &w, &wl);
    if (adaptive)
      check_tensor(op, label(o.ms_name, k), o.mss[k], {state_dtype}, Access::kWrite, &w, &wl);
    if (master)
      check_tensor(op, label(o.master_name, k), o.masters[k], {DType::kFloat32}, Access::kWrite, &w,
                   &wl);
    check_nonnegative(op, o.indexed ? "lrs" : "lr", o.lrs[k], o.indexed ? k : -1);
    check_nonnegative(op, o.indexed ? "wds" : "wd", o.wds[k], o.indexed ? k : -1);
    overlap.add(w, wl, Access::kWrite);
    overlap.add(o.grads[k], label(o.grad_name, k), Access::kRead);
    if (mom) overlap.add(o.moms[k], label(o.mom_name, k), Access::kWrite);
    if (dca) overlap.add(o.prevs[k], label(o.prev_name, k), anchor_access);
    if (adaptive) overlap.add(o.mss[k], label(o.ms_name, k), Access::kWrite);
    if (master) overlap.add(o.masters[k], label(o.master_name, k), Access::kWrite);
  }
  // Loss-scaling operands: one float32 element each, on the weights' device, only read.
  const TensorView* scale_views[2] = {nullptr, nullptr};
  if (o.loss_scale != nullptr) {
    const std::optional<TensorView>* opts[2] = {&o.loss_scale->grad_scale, &o.loss_scale->found_inf};
    const char* names[2] = {"grad_scale", "found_inf"};
    for (int i = 0; i < 2; ++i) {
      if (!opts[i]->has_value()) continue;
      const TensorView& t = **opts[i];
      const Label l{names[i]};
      check_tensor(op, l, t, {DType::kFloat32}, Access::kRead, nullptr);
      FUSEDOPT_CHECK(t.numel() == 1, ValueError, op, ": ", names[i],
                     " must have exactly one element, got shape ", shape_string(t));
      FUSEDOPT_CHECK(o.n == 0 || t.device == device, ValueError, op, ": ", names[i],
                     " is on a different device than ", to_string(first_weight),
                     "; all arrays of one call must be on one device");
      overlap.add(t, l, Access::kRead);
      scale_views[i] = &t;
    }
  }
  overlap.check(op);
  if (o.n == 0 || dry_run) return;

  SharedScalars scalars = shared;
  auto scalar_ptr = [](const TensorView* t) {
    return t ? static_cast<const float*>(t->data) : nullptr;
  };
  if (device.host_accessible()) {  // read once here; the CPU kernels see a plain rescale_grad
    if (scale_views[1] != nullptr && *scalar_ptr(scale_views[1]) != 0.0f) return;
    if (scale_views[0] != nullptr)
      scalars.rescale_grad = scaled_rescale(shared.rescale_grad, *scalar_ptr(scale_views[0]));
  } else {  // read by the kernels on the device: no host synchronisation
    scalars.grad_scale = scalar_ptr(scale_views[0]);
    scalars.found_inf = scalar_ptr(scale_views[1]);
  }

  // Group by weight dtype, keeping the caller's order inside a group; one launch per group.
  segs.reserve(static_cast<std::size_t>(o.n));
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64}) {
    segs.clear();
    for (std::int64_t k = 0; k < o.n; ++k) {
      if (o.weights[k].dtype != dt || o.weights[k].numel() == 0) continue;
      Segment& s = segs.emplace_back();  // filled in place (see OverlapChecker::add)
      s.w = o.weights[k].data;
      s.g = o.grads[k].data;
      s.m = mom ? o.moms[k].data : nullptr;
      s.prev = dca ? o.prevs[k].data : nullptr;
      s.ms = adaptive ? o.mss[k].data : nullptr;
      s.w32 = master ? static_cast<float*>(o.masters[k].data) : nullptr;
      s.n = o.weights[k].numel();
      s.lr = o.lrs[k];
      s.wd = o.wds[k];
    }
    if (segs.empty()) continue;
    UpdateKind kind{dt, rule, mom, master};
    launch(kind, segs.data(), static_cast<std::int64_t>(segs.size()), scalars, device, stream);
  }
}

}  // namespace fusedopt::detail
