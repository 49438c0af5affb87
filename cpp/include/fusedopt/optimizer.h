// optimizer.h — SGD and DCASGD optimizer objects for training loops written in C++: they own one state
// per parameter index (in host memory), apply lr/wd multipliers, count updates and take an LR
// scheduler, with the defaults, rules and error messages of the Python classes (SPEC.md §2, §3, §7).
// Weights and gradients are passed as views on every call; states are created on first sight.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "fusedopt/lr_scheduler.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt {

/// Arguments shared by every optimizer (Python's base keyword arguments).
struct OptimizerOptions {
  double rescale_grad = 1.0;
  double wd = 0.0;
  std::optional<double> clip_gradient;  ///< nullopt = off; else > 0
  /// nullopt: the scheduler's base_lr when a scheduler is given, else the class default (0.1 for SGD
  /// and DCASGD). When both are given and differ, the scheduler's base_lr is overwritten.
  std::optional<double> learning_rate;
  std::shared_ptr<LRScheduler> lr_scheduler;
  std::int64_t begin_num_update = 0;
  bool multi_precision = false;  ///< float32 master weights for float16 / bfloat16 weights
};

struct SGDOptions : OptimizerOptions {
  double momentum = 0.0;
  bool lazy_update = false;  ///< row-sparse gradients: update only the stored rows
  /// Tensors per aggregated kernel call in update(list); 1 = one call per tensor; <= 0 = all.
  std::int64_t aggregate_num = 1;
};

struct DCASGDOptions : OptimizerOptions {
  double momentum = 0.0;
  double lamda = 0.04;
  bool adaptive = false;   ///< adaptive lambda (DC-ASGD-a): the state gains a mean square
  double ms_decay = 0.95;  ///< adaptive only; 0 <= ms_decay < 1
  double eps = 1e-7;       ///< adaptive only; > 0
};

/// Base class: hyper-parameters, multipliers, counting and per-index state storage.
class Optimizer {
 public:
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Updates weight `index` in place with `grad` (the gradient is never modified).
  void update(std::int64_t index, TensorView weight, TensorView grad);
  /// Updates several weights; all are counted before any learning rate is read (fused_step order).
  /// Every tensor is validated before the first is written.
  void update(const std::vector<std::int64_t>& indices, const std::vector<TensorView>& weights,
              const std::vector<TensorView>& grads);

  /// lr_scheduler(num_update) when a scheduler is set, else the learning rate.
  double learning_rate();
  /// Throws fusedopt::Error (Python: UserWarning) when a scheduler is set.
  void set_learning_rate(double lr);
  /// Replace the multipliers (index -> factor); indices not listed use 1.
  void set_lr_mult(std::map<std::int64_t, double> mult) { lr_mult_ = std::move(mult); }
  void set_wd_mult(std::map<std::int64_t, double> mult) { wd_mult_ = std::move(mult); }

  std::int64_t num_update() const { return num_update_; }
  double rescale_grad() const { return rescale_grad_; }
  void set_rescale_grad(double v);
  double wd() const { return wd_; }
  void set_wd(double v);
  std::optional<double> clip_gradient() const { return clip_gradient_; }
  void set_clip_gradient(std::optional<double> v);
  const std::shared_ptr<LRScheduler>& lr_scheduler() const { return lr_scheduler_; }

  /// Number of parameter states held.
  std::size_t num_states() const { return states_.size(); }
  /// Read access to a state buffer ("weight32", "mom", "prev", "mean_square") of an index, for
  /// inspection and tests.
  TensorView state(std::int64_t index, const char* name) const;

 protected:
  Optimizer(const OptimizerOptions& o, double default_lr);

  /// One parameter's state: float32 master when multi-precision, momentum, DCASGD prev and (adaptive
  /// DCASGD) mean square.
  struct Buffer {
    std::unique_ptr<unsigned char[]> bytes;
    TensorView view;
  };
  struct ParamState {
    TensorView like;  ///< dtype and shape of the weight it was made for (data unused)
    bool master = false;
    Buffer weight32, mom, prev, ms;
  };
  struct Item {
    std::int64_t index;
    TensorView weight, grad;
    ParamState* state;
    double lr, wd;
    const RowSparseView* rsp;  ///< non-null: the gradient is row-sparse (grad is its data)
  };

  /// Counting, rates, states, validation and apply() for dense gradients or one row-sparse one.
  void update_impl(const std::vector<std::int64_t>& indices, const std::vector<TensorView>& weights,
                   const std::vector<TensorView>& grads, const RowSparseView* rsp);

  /// Allocates the state of a new index (`init` is the weight, for prev / master copies).
  virtual void init_state(ParamState& st, const TensorView& weight) = 0;
  /// Validates one item as its kernel will, writing nothing.
  virtual void check(const Item& item) = 0;
  /// Runs the kernels for validated items.
  virtual void apply(std::vector<Item>& items) = 0;

  Buffer make_buffer(const TensorView& like, DType dtype, const void* init) const;
  bool use_master(const TensorView& weight) const;

 private:
  ParamState& state_for(std::int64_t index, const TensorView& weight);

  double rescale_grad_ = 1.0, wd_ = 0.0;
  std::optional<double> clip_gradient_;
  std::optional<double> lr_;
  std::shared_ptr<LRScheduler> lr_scheduler_;
  std::int64_t begin_num_update_ = 0, num_update_ = 0;
  bool multi_precision_ = false;
  std::map<std::int64_t, double> lr_mult_, wd_mult_;
  std::unordered_map<std::int32_t, std::unordered_map<std::int64_t, std::int64_t>> counts_;
  std::unordered_map<std::int64_t, ParamState> states_;
};

/// SGD with MXNet's momentum convention (lr inside the momentum buffer). See SgdParams.
class SGD : public Optimizer {
 public:
  explicit SGD(const SGDOptions& o = {});
  double momentum() const { return momentum_; }
  void set_momentum(double m);
  using Optimizer::update;
  /// Row-sparse gradient (lazy or standard update per lazy_update).
  void update(std::int64_t index, TensorView weight, const RowSparseView& grad);

 protected:
  void init_state(ParamState& st, const TensorView& weight) override;
  void check(const Item& item) override;
  void apply(std::vector<Item>& items) override;

 private:
  double momentum_ = 0.0;
  bool lazy_update_ = false;
  std::int64_t aggregate_num_ = 1;
};

/// Delay-compensated asynchronous SGD (arXiv 1609.08326). See DcasgdParams.
class DCASGD : public Optimizer {
 public:
  explicit DCASGD(const DCASGDOptions& o = {});
  double momentum() const { return momentum_; }
  double lamda() const { return lamda_; }
  bool adaptive() const { return adaptive_; }

 protected:
  void init_state(ParamState& st, const TensorView& weight) override;
  void check(const Item& item) override;
  void apply(std::vector<Item>& items) override;

 private:
  double momentum_ = 0.0, lamda_ = 0.04;
  bool adaptive_ = false;
  double ms_decay_ = 0.95, eps_ = 1e-7;
};

}  // namespace fusedopt
