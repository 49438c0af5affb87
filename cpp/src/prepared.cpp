// prepared.cpp — PreparedUpdate: validate once through detail::checked_update (dry run), keep the
// segments, and per step fill in lr / wd and launch.
#include "fusedopt/prepared.h"

#include "check.h"
#include "update_api.h"

namespace fusedopt {

struct PreparedUpdate::Impl {
  const char* op;
  detail::RuleKind rule;
  bool momentum;
  bool master;
  bool adaptive = false;
  Device device;
  std::vector<double> lr_mult, wd_mult;
  /// Segments grouped by weight dtype; `order[i]` is the tensor index of segment i of a group.
  struct Group {
    detail::UpdateKind kind;
    std::vector<detail::Segment> segs;
    std::vector<std::size_t> tensor;
  };
  std::vector<Group> groups;
  std::size_t n = 0;
};

namespace {

std::vector<double> mults(std::vector<double> m, std::size_t n, const char* op, const char* name) {
  if (m.empty()) return std::vector<double>(n, 1.0);
  FUSEDOPT_CHECK(m.size() == n, ValueError, op, ": expected ", n, " ", name, " (one per weight), got ",
                 m.size());
  for (double v : m) detail::check_nonnegative(op, name, v);
  return m;
}

}  // namespace

PreparedUpdate::PreparedUpdate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PreparedUpdate::PreparedUpdate(PreparedUpdate&&) noexcept = default;
PreparedUpdate& PreparedUpdate::operator=(PreparedUpdate&&) noexcept = default;
PreparedUpdate::~PreparedUpdate() = default;

std::size_t PreparedUpdate::size() const { return impl_->n; }

static PreparedUpdate::Impl* build(PreparedUpdate::Impl* impl, const std::vector<TensorView>& w,
                                   const std::vector<TensorView>& g,
                                   const std::vector<TensorView>& m,
                                   const std::vector<TensorView>& prev,
                                   const std::vector<TensorView>& w32,
                                   const std::vector<TensorView>& ms = {}) {
  const char* op = impl->op;
  const std::size_t n = w.size();
  auto same = [&](const std::vector<TensorView>& v, const char* name, bool required) {
    if (!required && v.empty()) return;
    FUSEDOPT_CHECK(v.size() == n, ValueError, op, ": expected ", n, " ", name,
                   " (one per weight), got ", v.size());
  };
  same(g, "grads", true);
  same(m, "moms", false);
  const bool dcasgd = detail::rule_writes_anchor(impl->rule);
  same(prev, "prevs", dcasgd);
  same(ms, "mean_squares", impl->adaptive);
  same(w32, "weights32", false);
  impl->n = n;
  impl->momentum = !m.empty();
  impl->master = !w32.empty();
  // Validate everything once, exactly as the operators do (lr = wd = 0 placeholders).
  std::vector<double> zeros(n, 0.0);
  detail::OperandSet o = detail::list_operands(
      n, w.data(), g.data(), impl->momentum ? m.data() : nullptr,
      dcasgd ? prev.data() : nullptr, impl->master ? w32.data() : nullptr, zeros.data(),
      zeros.data());
  if (impl->adaptive) o.mss = ms.data();
  detail::SharedScalars s;
  s.clip = 1.0;
  s.eps = 1.0;
  detail::checked_update(op, impl->rule, impl->master, o, s, Stream{}, /*dry_run=*/true);
  impl->device = n > 0 ? w[0].device : Device{};
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64}) {
    PreparedUpdate::Impl::Group grp;
    grp.kind = detail::UpdateKind{dt, impl->rule, impl->momentum, impl->master};
    for (std::size_t k = 0; k < n; ++k) {
      if (w[k].dtype != dt || w[k].numel() == 0) continue;
      detail::Segment& seg = grp.segs.emplace_back();
      seg.w = w[k].data;
      seg.g = g[k].data;
      seg.m = impl->momentum ? m[k].data : nullptr;
      seg.prev = dcasgd ? prev[k].data : nullptr;
      seg.ms = impl->adaptive ? ms[k].data : nullptr;
      seg.w32 = impl->master ? static_cast<float*>(w32[k].data) : nullptr;
      seg.n = w[k].numel();
      grp.tensor.push_back(k);
    }
    if (!grp.segs.empty()) impl->groups.push_back(std::move(grp));
  }
  return impl;
}

PreparedUpdate PreparedUpdate::sgd(std::vector<TensorView> weights, std::vector<TensorView> grads,
                                   std::vector<TensorView> moms, std::vector<TensorView> weights32,
                                   std::vector<double> lr_mult, std::vector<double> wd_mult) {
  auto impl = std::make_unique<Impl>();
  impl->op = weights32.empty() ? (moms.empty() ? "multi_sgd_update" : "multi_sgd_mom_update")
                               : (moms.empty() ? "multi_mp_sgd_update" : "multi_mp_sgd_mom_update");
  impl->rule = detail::RuleKind::kSgd;
  impl->lr_mult = mults(std::move(lr_mult), weights.size(), impl->op, "lr_mult");
  impl->wd_mult = mults(std::move(wd_mult), weights.size(), impl->op, "wd_mult");
  build(impl.get(), weights, grads, moms, {}, weights32);
  return PreparedUpdate(std::move(impl));
}

PreparedUpdate PreparedUpdate::dcasgd(std::vector<TensorView> weights,
                                      std::vector<TensorView> grads, std::vector<TensorView> moms,
                                      std::vector<TensorView> prevs,
                                      std::vector<TensorView> weights32,
                                      std::vector<double> lr_mult, std::vector<double> wd_mult) {
  auto impl = std::make_unique<Impl>();
  impl->op = weights32.empty() ? "dcasgd_update" : "mp_dcasgd_update";
  impl->rule = detail::RuleKind::kDcasgd;
  impl->lr_mult = mults(std::move(lr_mult), weights.size(), impl->op, "lr_mult");
  impl->wd_mult = mults(std::move(wd_mult), weights.size(), impl->op, "wd_mult");
  build(impl.get(), weights, grads, moms, prevs, weights32);
  return PreparedUpdate(std::move(impl));
}

PreparedUpdate PreparedUpdate::dcasgd_adaptive(
    std::vector<TensorView> weights, std::vector<TensorView> grads, std::vector<TensorView> moms,
    std::vector<TensorView> prevs, std::vector<TensorView> mean_squares,
    std::vector<TensorView> weights32, std::vector<double> lr_mult, std::vector<double> wd_mult) {
  auto impl = std::make_unique<Impl>();
  impl->op = weights32.empty() ? "multi_dcasgd_update" : "multi_mp_dcasgd_update";
  impl->rule = detail::RuleKind::kDcasgdAdaptive;
  impl->adaptive = true;
  impl->lr_mult = mults(std::move(lr_mult), weights.size(), impl->op, "lr_mult");
  impl->wd_mult = mults(std::move(wd_mult), weights.size(), impl->op, "wd_mult");
  build(impl.get(), weights, grads, moms, prevs, weights32, mean_squares);
  return PreparedUpdate(std::move(impl));
}

void PreparedUpdate::check(double lr, double wd, double momentum, double rescale_grad,
                           std::optional<double> clip_gradient, double lamda, double ms_decay,
                           double eps) const {
  const Impl& im = *impl_;
  detail::check_nonnegative(im.op, "lr", lr);
  detail::check_nonnegative(im.op, "wd", wd);
  if (im.momentum) detail::check_nonnegative(im.op, "momentum", momentum);
  if (im.adaptive) detail::check_ms_decay_eps(im.op, ms_decay, eps);
  if (detail::rule_writes_anchor(im.rule)) {
    detail::check_nonnegative(im.op, "lamda", lamda);
    FUSEDOPT_CHECK(im.momentum || momentum == 0.0, ValueError, im.op, ": momentum is ", momentum,
                   " but no momentum buffers were prepared");
  }
  detail::check_finite(im.op, "rescale_grad", rescale_grad);
  detail::checked_clip(im.op, clip_gradient);
}

void PreparedUpdate::step(double lr, double wd, double momentum, double rescale_grad,
                          std::optional<double> clip_gradient, double lamda, double ms_decay,
                          double eps, Stream stream) {
  Impl& im = *impl_;
  check(lr, wd, momentum, rescale_grad, clip_gradient, lamda, ms_decay, eps);
  detail::SharedScalars s;
  s.momentum = im.momentum ? momentum : 0.0;
  s.rescale_grad = rescale_grad;
  s.clip = detail::checked_clip(im.op, clip_gradient);
  s.lamda = detail::rule_writes_anchor(im.rule) ? lamda : 0.0;
  if (im.adaptive) {
    s.ms_decay = ms_decay;
    s.eps = eps;
  }
  // Every effective rate is checked before the first launch, as the operators check lrs / wds: a
  // product can overflow (lr * lr_mult = inf) where neither factor is out of range.
  for (Impl::Group& grp : im.groups) {
    for (std::size_t i = 0; i < grp.segs.size(); ++i) {
      const std::size_t k = grp.tensor[i];
      grp.segs[i].lr = lr * im.lr_mult[k];
      grp.segs[i].wd = wd * im.wd_mult[k];
      detail::check_nonnegative(im.op, "lr * lr_mult", grp.segs[i].lr, static_cast<std::int64_t>(k));
      detail::check_nonnegative(im.op, "wd * wd_mult", grp.segs[i].wd, static_cast<std::int64_t>(k));
    }
  }
  for (Impl::Group& grp : im.groups) {
    detail::launch(grp.kind, grp.segs.data(), static_cast<std::int64_t>(grp.segs.size()), s,
                   im.device, stream);
  }
}

}  // namespace fusedopt
