// optimizer.cpp — the C++ optimizer objects: bookkeeping (counts, multipliers, schedulers, states) in
// the same order as fusedopt.Optimizer in Python; the arithmetic is the validated operators'.
#include "fusedopt/optimizer.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "check.h"
#include "fusedopt/dcasgd.h"
#include "fusedopt/sgd.h"
#include "validate.h"

namespace fusedopt {
namespace {

double checked_nonneg(const char* name, double v) {
  FUSEDOPT_CHECK(std::isfinite(v) && v >= 0.0, ValueError, "Invalid ", name, " value: ", v,
                 " (expected a finite number >= 0)");
  return v;
}

double checked_finite(const char* name, double v) {
  FUSEDOPT_CHECK(std::isfinite(v), ValueError, "Invalid ", name, " value: ", v,
                 " (expected a finite number)");
  return v;
}

std::optional<double> checked_clip(std::optional<double> v) {
  if (v)
    FUSEDOPT_CHECK(*v > 0.0, ValueError, "Invalid clip_gradient value: ", *v,
                   " (expected None for no clipping, or a number > 0)");
  return v;
}

double mult_of(const std::map<std::int64_t, double>& m, std::int64_t index) {
  auto it = m.find(index);
  return it == m.end() ? 1.0 : it->second;
}

bool same_layout(const TensorView& a, const TensorView& b) {
  if (a.dtype != b.dtype || a.ndim != b.ndim) return false;
  for (std::int32_t i = 0; i < a.ndim; ++i)
    if (a.shape[static_cast<std::size_t>(i)] != b.shape[static_cast<std::size_t>(i)]) return false;
  return a.same_layout(b);
}

}  // namespace

Optimizer::Optimizer(const OptimizerOptions& o, double default_lr)
    : rescale_grad_(checked_finite("rescale_grad", o.rescale_grad)),
      wd_(checked_nonneg("wd", o.wd)),
      clip_gradient_(checked_clip(o.clip_gradient)),
      lr_scheduler_(o.lr_scheduler),
      begin_num_update_(o.begin_num_update),
      num_update_(o.begin_num_update),
      multi_precision_(o.multi_precision) {
  if (o.learning_rate) {
    lr_ = checked_nonneg("learning_rate", *o.learning_rate);
    // SPEC.md §2: an explicit learning rate different from the scheduler's base_lr overwrites it
    // (Python also warns).
    if (lr_scheduler_ && lr_scheduler_->base_lr != *lr_) lr_scheduler_->base_lr = *lr_;
  } else if (!lr_scheduler_) {
    lr_ = default_lr;
  }
}

Optimizer::~Optimizer() = default;

double Optimizer::learning_rate() {
  return lr_scheduler_ ? (*lr_scheduler_)(num_update_) : *lr_;
}

void Optimizer::set_learning_rate(double lr) {
  FUSEDOPT_CHECK(!lr_scheduler_, Error,
                 "LRScheduler of the optimizer has already been defined. Note that "
                 "set_learning_rate can mutate the value of the learning rate of the optimizer only "
                 "when the LRScheduler of the optimizer is undefined.");
  lr_ = checked_nonneg("learning_rate", lr);
}

void Optimizer::set_rescale_grad(double v) { rescale_grad_ = checked_finite("rescale_grad", v); }
void Optimizer::set_wd(double v) { wd_ = checked_nonneg("wd", v); }
void Optimizer::set_clip_gradient(std::optional<double> v) { clip_gradient_ = checked_clip(v); }

bool Optimizer::use_master(const TensorView& weight) const {
  return multi_precision_ &&
         (weight.dtype == DType::kFloat16 || weight.dtype == DType::kBFloat16);
}

Optimizer::Buffer Optimizer::make_buffer(const TensorView& like, DType dtype,
                                         const void* init) const {
  constexpr std::size_t kAlign = 64;
  const auto n = static_cast<std::size_t>(like.numel());
  const std::size_t bytes = n * dtype_size(dtype);
  Buffer b;
  b.bytes.reset(new unsigned char[bytes + kAlign]);
  auto addr = reinterpret_cast<std::uintptr_t>(b.bytes.get());
  void* data = b.bytes.get() + (kAlign - addr % kAlign) % kAlign;
  if (init == nullptr) {
    std::memset(data, 0, bytes);
  } else if (dtype == like.dtype) {
    std::memcpy(data, init, bytes);
  } else {  // float32 master copy of a float16 / bfloat16 weight
    auto* out = static_cast<float*>(data);
    if (like.dtype == DType::kFloat16) {
      const auto* in = static_cast<const half*>(init);
      for (std::size_t i = 0; i < n; ++i) out[i] = to_float(in[i]);
    } else {
      const auto* in = static_cast<const bfloat16*>(init);
      for (std::size_t i = 0; i < n; ++i) out[i] = to_float(in[i]);
    }
  }
  b.view = TensorView(data, dtype, std::vector<std::int64_t>(like.shape.begin(), like.shape.begin() + like.ndim));
  // A dense strided weight (Note [dense layouts]) was copied in memory order: the state keeps its
  // strides, so element i of both sits at the same offset.
  b.view.strides = like.strides;
  b.view.has_strides = like.has_strides;
  return b;
}

Optimizer::ParamState& Optimizer::state_for(std::int64_t index, const TensorView& weight) {
  auto it = states_.find(index);
  if (it != states_.end()) {
    FUSEDOPT_CHECK(same_layout(it->second.like, weight), ValueError, "the state of index ", index,
                   " was created for a ", dtype_name(it->second.like.dtype), " ",
                   detail::shape_string(it->second.like), " weight with strides ",
                   detail::strides_string(it->second.like), ", got a ", dtype_name(weight.dtype),
                   " ", detail::shape_string(weight), " weight with strides ",
                   detail::strides_string(weight));
    return it->second;
  }
  FUSEDOPT_CHECK(weight.device.host_accessible(), ValueError,
                 "fusedopt::Optimizer keeps its states in host memory; weight of index ", index,
                 " is on a device (use the update operators with device buffers instead)");
  FUSEDOPT_CHECK(weight.data != nullptr || weight.numel() == 0, ValueError, "weight of index ",
                 index, " has a null data pointer");
  // The states are copied from the weight's memory as one range: only a dense layout is one.
  FUSEDOPT_CHECK(weight.ndim >= 0 && weight.ndim <= TensorView::kMaxDims && weight.is_dense(),
                 ValueError, "weight of index ", index,
                 " must be dense: C-contiguous, or a permutation of that layout with positive "
                 "strides and no gaps or overlaps; got strides ", detail::strides_string(weight));
  ParamState st;
  st.like = weight;
  st.master = use_master(weight);
  init_state(st, weight);
  return states_.emplace(index, std::move(st)).first->second;
}

TensorView Optimizer::state(std::int64_t index, const char* name) const {
  auto it = states_.find(index);
  FUSEDOPT_CHECK(it != states_.end(), ValueError, "no state for index ", index);
  const ParamState& st = it->second;
  const std::string n(name);
  const Buffer* b = n == "weight32"      ? &st.weight32
                    : n == "mom"         ? &st.mom
                    : n == "prev"        ? &st.prev
                    : n == "mean_square" ? &st.ms
                                         : nullptr;
  FUSEDOPT_CHECK(b != nullptr, ValueError, "unknown state buffer '", n,
                 "' (expected weight32, mom, prev or mean_square)");
  FUSEDOPT_CHECK(b->bytes != nullptr, ValueError, "index ", index, " has no '", n, "' state");
  TensorView v = b->view;
  v.read_only = true;
  return v;
}

void Optimizer::update(std::int64_t index, TensorView weight, TensorView grad) {
  update(std::vector<std::int64_t>{index}, std::vector<TensorView>{weight},
         std::vector<TensorView>{grad});
}

void Optimizer::update(const std::vector<std::int64_t>& indices,
                       const std::vector<TensorView>& weights,
                       const std::vector<TensorView>& grads) {
  update_impl(indices, weights, grads, nullptr);
}

void Optimizer::update_impl(const std::vector<std::int64_t>& indices,
                            const std::vector<TensorView>& weights,
                            const std::vector<TensorView>& grads, const RowSparseView* rsp) {
  FUSEDOPT_CHECK(indices.size() == weights.size() && indices.size() == grads.size(), ValueError,
                 "update: indices, weights and grads must have the same length, got ",
                 indices.size(), ", ", weights.size(), " and ", grads.size());
  if (indices.empty()) return;
  auto& counts = counts_[weights[0].device.id];
  // Count every index first (fused_step order); undone if the call is rejected.
  const std::int64_t saved_num_update = num_update_;
  std::vector<std::pair<std::int64_t, std::optional<std::int64_t>>> changes;
  changes.reserve(indices.size());
  for (std::int64_t idx : indices) {
    auto it = counts.find(idx);
    changes.emplace_back(idx, it == counts.end() ? std::nullopt
                                                 : std::optional<std::int64_t>(it->second));
    std::int64_t& c = counts.try_emplace(idx, begin_num_update_).first->second;
    ++c;
    num_update_ = std::max(num_update_, c);
  }
  try {
    const double lr = learning_rate();
    std::vector<Item> items;
    items.reserve(indices.size());
    for (std::size_t k = 0; k < indices.size(); ++k) {
      Item it{indices[k], weights[k], grads[k], &state_for(indices[k], weights[k]),
              lr * mult_of(lr_mult_, indices[k]), wd_ * mult_of(wd_mult_, indices[k]), rsp};
      checked_nonneg("lr", it.lr);
      checked_nonneg("wd", it.wd);
      items.push_back(it);
    }
    if (items.size() > 1)
      for (const Item& it : items) check(it);
    apply(items);
  } catch (...) {
    for (auto c = changes.rbegin(); c != changes.rend(); ++c) {
      if (c->second) counts[c->first] = *c->second;
      else counts.erase(c->first);
    }
    num_update_ = saved_num_update;
    throw;
  }
}

// ------------------------------------------------------------------------------------------ SGD
SGD::SGD(const SGDOptions& o)
    : Optimizer(o, 0.1),
      momentum_(checked_nonneg("momentum", o.momentum)),
      lazy_update_(o.lazy_update),
      aggregate_num_(o.aggregate_num) {
  FUSEDOPT_CHECK(!(o.lazy_update && o.multi_precision), ValueError,
                 "When lazy_update is set to True, multi_precision has be turned off.");
}

void SGD::set_momentum(double m) { momentum_ = checked_nonneg("momentum", m); }

void SGD::init_state(ParamState& st, const TensorView& w) {
  if (st.master) {
    st.weight32 = make_buffer(w, DType::kFloat32, w.data);
    if (momentum_ != 0.0) st.mom = make_buffer(w, DType::kFloat32, nullptr);
  } else if (momentum_ != 0.0) {
    st.mom = make_buffer(w, w.dtype, nullptr);
  }
}

void SGD::check(const Item& it) {
  const ParamState& st = *it.state;
  const SgdParams p{it.lr, it.wd, momentum_, rescale_grad(), clip_gradient(), lazy_update_};
  if (it.rsp != nullptr) {
    FUSEDOPT_CHECK(!st.master, TypeError,
                   "mp_sgd_update: grad must be dense; row-sparse gradients are supported by "
                   "sgd_update and sgd_mom_update");
    check_sgd_args(it.weight, *it.rsp, st.mom.bytes ? &st.mom.view : nullptr, p);
    return;
  }
  check_sgd_args(it.weight, it.grad, st.mom.bytes ? &st.mom.view : nullptr,
                 st.master ? &st.weight32.view : nullptr, p);
}

void SGD::apply(std::vector<Item>& items) {
  if (aggregate_num_ == 1 || items.size() == 1) {
    for (Item& it : items) {
      ParamState& st = *it.state;
      const SgdParams p{it.lr, it.wd, momentum_, rescale_grad(), clip_gradient(), lazy_update_};
      if (it.rsp != nullptr) {
        check(it);  // mp + row-sparse is a TypeError; everything else is checked by the operator
        if (st.mom.bytes) sgd_mom_update(it.weight, *it.rsp, st.mom.view, p);
        else sgd_update(it.weight, *it.rsp, p);
      } else if (st.master && st.mom.bytes)
        mp_sgd_mom_update(it.weight, it.grad, st.mom.view, st.weight32.view, p);
      else if (st.master)
        mp_sgd_update(it.weight, it.grad, st.weight32.view, p);
      else if (st.mom.bytes)
        sgd_mom_update(it.weight, it.grad, st.mom.view, p);
      else
        sgd_update(it.weight, it.grad, p);
    }
    return;
  }
  // Group by (dtype, master, momentum) in order of first appearance; chunks of aggregate_num.
  struct Group {
    DType dtype;
    bool master, mom;
    std::vector<Item*> members;
  };
  std::vector<Group> groups;
  for (Item& it : items) {
    const bool mom = it.state->mom.bytes != nullptr;
    Group* g = nullptr;
    for (Group& cand : groups)
      if (cand.dtype == it.weight.dtype && cand.master == it.state->master && cand.mom == mom)
        g = &cand;
    if (g == nullptr) g = &groups.emplace_back(Group{it.weight.dtype, it.state->master, mom, {}});
    g->members.push_back(&it);
  }
  for (const Group& g : groups) {
    const std::size_t chunk = aggregate_num_ <= 0 ? g.members.size()
                                                  : static_cast<std::size_t>(aggregate_num_);
    for (std::size_t start = 0; start < g.members.size(); start += chunk) {
      const std::size_t end = std::min(g.members.size(), start + chunk);
      std::vector<TensorView> w, gr, m, w32;
      MultiSgdParams p;
      p.momentum = momentum_;
      p.rescale_grad = rescale_grad();
      p.clip_gradient = clip_gradient();
      for (std::size_t k = start; k < end; ++k) {
        Item& it = *g.members[k];
        w.push_back(it.weight);
        gr.push_back(it.grad);
        if (g.mom) m.push_back(it.state->mom.view);
        if (g.master) w32.push_back(it.state->weight32.view);
        p.lrs.push_back(it.lr);
        p.wds.push_back(it.wd);
      }
      if (g.master && g.mom) multi_mp_sgd_mom_update(w, gr, m, w32, p);
      else if (g.master) multi_mp_sgd_update(w, gr, w32, p);
      else if (g.mom) multi_sgd_mom_update(w, gr, m, p);
      else multi_sgd_update(w, gr, p);
    }
  }
}

void SGD::update(std::int64_t index, TensorView weight, const RowSparseView& grad) {
  update_impl({index}, {weight}, {grad.data}, &grad);
}

}  // namespace fusedopt

namespace fusedopt {

// --------------------------------------------------------------------------------------- DCASGD
DCASGD::DCASGD(const DCASGDOptions& o)
    : Optimizer(o, 0.1),
      momentum_(checked_nonneg("momentum", o.momentum)),
      lamda_(checked_nonneg("lamda", o.lamda)),
      adaptive_(o.adaptive),
      ms_decay_(o.ms_decay),
      eps_(o.eps) {
  FUSEDOPT_CHECK(std::isfinite(ms_decay_) && ms_decay_ >= 0.0 && ms_decay_ < 1.0, ValueError,
                 "Invalid ms_decay value: ", ms_decay_, " (expected a finite number in [0, 1))");
  FUSEDOPT_CHECK(std::isfinite(eps_) && eps_ > 0.0, ValueError, "Invalid eps value: ", eps_,
                 " (expected a finite number > 0)");
}

void DCASGD::init_state(ParamState& st, const TensorView& w) {
  const DType state_dtype = st.master ? DType::kFloat32 : w.dtype;
  if (st.master) st.weight32 = make_buffer(w, DType::kFloat32, w.data);
  if (momentum_ != 0.0) st.mom = make_buffer(w, state_dtype, nullptr);
  st.prev = make_buffer(w, state_dtype, w.data);
  if (adaptive_) st.ms = make_buffer(w, state_dtype, nullptr);
}

void DCASGD::check(const Item& it) {
  const ParamState& st = *it.state;
  check_dcasgd_args(it.weight, it.grad, st.mom.bytes ? &st.mom.view : nullptr, st.prev.view,
                    st.master ? &st.weight32.view : nullptr, st.ms.bytes ? &st.ms.view : nullptr,
                    DcasgdParams{it.lr, it.wd, st.mom.bytes ? momentum_ : 0.0, lamda_,
                                  rescale_grad(), clip_gradient(), ms_decay_, eps_});
}

void DCASGD::apply(std::vector<Item>& items) {
  if (items.size() == 1) {
    Item& it = items.front();
    ParamState& st = *it.state;
    const TensorView* mom = st.mom.bytes ? &st.mom.view : nullptr;
    const TensorView* ms = st.ms.bytes ? &st.ms.view : nullptr;
    const DcasgdParams p{it.lr,          it.wd,           mom ? momentum_ : 0.0, lamda_,
                         rescale_grad(), clip_gradient(), ms_decay_,             eps_};
    if (st.master)
      mp_dcasgd_update(it.weight, it.grad, mom, st.prev.view, st.weight32.view, ms, p);
    else
      dcasgd_update(it.weight, it.grad, mom, st.prev.view, ms, p);
    return;
  }
  // One aggregated call per (master, momentum) kind, in order of first appearance (the caller has
  // validated every item already, so a later group cannot fail after an earlier one wrote).
  for (const bool master : {false, true}) {
    for (const bool with_mom : {false, true}) {
      std::vector<TensorView> w, gr, m, prev, w32, ms;
      MultiDcasgdParams p;
      p.momentum = with_mom ? momentum_ : 0.0;
      p.lamda = lamda_;
      p.rescale_grad = rescale_grad();
      p.clip_gradient = clip_gradient();
      p.ms_decay = ms_decay_;
      p.eps = eps_;
      for (Item& it : items) {
        const ParamState& st = *it.state;
        if (st.master != master || (st.mom.bytes != nullptr) != with_mom) continue;
        w.push_back(it.weight);
        gr.push_back(it.grad);
        if (with_mom) m.push_back(st.mom.view);
        prev.push_back(st.prev.view);
        if (adaptive_) ms.push_back(st.ms.view);
        if (master) w32.push_back(st.weight32.view);
        p.lrs.push_back(it.lr);
        p.wds.push_back(it.wd);
      }
      if (w.empty()) continue;
      if (master) multi_mp_dcasgd_update(w, gr, m, prev, w32, ms, p);
      else multi_dcasgd_update(w, gr, m, prev, ms, p);
    }
  }
}

}  // namespace fusedopt
