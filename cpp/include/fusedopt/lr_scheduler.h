// lr_scheduler.h — learning-rate schedulers with MXNet 2.0 semantics (docs/SEMANTICS.md §8). The single
// implementation: fusedopt.lr_scheduler in Python wraps these classes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fusedopt {

enum class WarmupMode { kLinear, kConstant };

/// Parses "linear" / "constant"; throws ValueError otherwise.
WarmupMode parse_warmup_mode(const std::string& mode);

/// Base scheduler: `base_lr` with an optional warmup of `warmup_steps` updates, during which the rate is
/// `warmup_begin_lr` (constant) or rises linearly from it to the base_lr given at construction.
/// Schedulers are stateful and assume num_update never decreases between calls.
class LRScheduler {
 public:
  explicit LRScheduler(double base_lr = 0.01, std::int64_t warmup_steps = 0,
                       double warmup_begin_lr = 0.0, WarmupMode warmup_mode = WarmupMode::kLinear);
  virtual ~LRScheduler() = default;

  /// The rate for update count `num_update`. The base class is constant after warmup.
  virtual double operator()(std::int64_t num_update);
  /// The warmup rate; requires num_update < warmup_steps.
  double get_warmup_lr(std::int64_t num_update) const;

  double base_lr;
  std::int64_t warmup_steps;
  double warmup_final_lr;
  double warmup_begin_lr;
  WarmupMode warmup_mode;
};

/// base_lr *= factor every `step` updates (after warmup), never below stop_factor_lr.
class FactorScheduler : public LRScheduler {
 public:
  FactorScheduler(std::int64_t step, double factor = 1.0, double stop_factor_lr = 1e-8,
                  double base_lr = 0.01, std::int64_t warmup_steps = 0,
                  double warmup_begin_lr = 0.0, WarmupMode warmup_mode = WarmupMode::kLinear);
  double operator()(std::int64_t num_update) override;

  std::int64_t step;
  double factor;
  double stop_factor_lr;
  std::int64_t count = 0;
};

/// base_lr *= factor after each update count in the strictly increasing list `step`.
class MultiFactorScheduler : public LRScheduler {
 public:
  MultiFactorScheduler(std::vector<std::int64_t> step, double factor = 1.0, double base_lr = 0.01,
                       std::int64_t warmup_steps = 0, double warmup_begin_lr = 0.0,
                       WarmupMode warmup_mode = WarmupMode::kLinear);
  double operator()(std::int64_t num_update) override;

  std::vector<std::int64_t> step;
  double factor;
  std::int64_t cur_step_ind = 0;
  std::int64_t count = 0;
};

/// final + (base - final) * (1 - (n - warmup) / (max_update - warmup))^pwr up to max_update.
class PolyScheduler : public LRScheduler {
 public:
  PolyScheduler(std::int64_t max_update, double base_lr = 0.01, double pwr = 2.0,
                double final_lr = 0.0, std::int64_t warmup_steps = 0, double warmup_begin_lr = 0.0,
                WarmupMode warmup_mode = WarmupMode::kLinear);
  double operator()(std::int64_t num_update) override;

  double power;
  double base_lr_orig;
  std::int64_t max_update;
  double final_lr;
  std::int64_t max_steps;
};

/// final + (base - final) * (1 + cos(pi * (n - warmup) / (max_update - warmup))) / 2 up to max_update.
class CosineScheduler : public LRScheduler {
 public:
  CosineScheduler(std::int64_t max_update, double base_lr = 0.01, double final_lr = 0.0,
                  std::int64_t warmup_steps = 0, double warmup_begin_lr = 0.0,
                  WarmupMode warmup_mode = WarmupMode::kLinear);
  double operator()(std::int64_t num_update) override;

  double base_lr_orig;
  std::int64_t max_update;
  double final_lr;
  std::int64_t max_steps;
};

}  // namespace fusedopt
