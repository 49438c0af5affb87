// lr_scheduler.cpp — MXNet 2.0 schedulers; error messages are MXNet's.
#include "fusedopt/lr_scheduler.h"

#include <cmath>
#include <utility>

#include "check.h"

namespace fusedopt {

WarmupMode parse_warmup_mode(const std::string& mode) {
  if (mode == "linear") return WarmupMode::kLinear;
  if (mode == "constant") return WarmupMode::kConstant;
  throw ValueError("Supports only linear and constant modes of warmup");
}

LRScheduler::LRScheduler(double base_lr_, std::int64_t warmup_steps_, double warmup_begin_lr_,
                         WarmupMode warmup_mode_)
    : base_lr(base_lr_),
      warmup_steps(warmup_steps_),
      warmup_final_lr(base_lr_),
      warmup_begin_lr(warmup_begin_lr_),
      warmup_mode(warmup_mode_) {
  FUSEDOPT_CHECK(!(warmup_begin_lr > warmup_final_lr), ValueError,
                 "Base lr has to be higher than warmup_begin_lr");
  FUSEDOPT_CHECK(warmup_steps >= 0, ValueError, "Warmup steps has to be positive or 0");
}

double LRScheduler::operator()(std::int64_t num_update) {
  return num_update < warmup_steps ? get_warmup_lr(num_update) : base_lr;
}

double LRScheduler::get_warmup_lr(std::int64_t num_update) const {
  FUSEDOPT_CHECK(num_update < warmup_steps, ValueError, "num_update ", num_update,
                 " is not within the ", warmup_steps, " warmup steps");
  if (warmup_mode == WarmupMode::kLinear) {
    double increase = (warmup_final_lr - warmup_begin_lr) * static_cast<double>(num_update) /
                      static_cast<double>(warmup_steps);
    return warmup_begin_lr + increase;
  }
  return warmup_begin_lr;
}

FactorScheduler::FactorScheduler(std::int64_t step_, double factor_, double stop_factor_lr_,
                                 double base_lr_, std::int64_t warmup_steps_,
                                 double warmup_begin_lr_, WarmupMode warmup_mode_)
    : LRScheduler(base_lr_, warmup_steps_, warmup_begin_lr_, warmup_mode_),
      step(step_),
      factor(factor_),
      stop_factor_lr(stop_factor_lr_) {
  FUSEDOPT_CHECK(step >= 1, ValueError, "Schedule step must be greater or equal than 1 round");
  FUSEDOPT_CHECK(!(factor > 1.0), ValueError, "Factor must be no more than 1 to make lr reduce");
}

double FactorScheduler::operator()(std::int64_t num_update) {
  if (num_update < warmup_steps) return get_warmup_lr(num_update);
  // `while`, not `if`: a run resumed at a large num_update catches up at once.
  while (num_update > count + step) {
    count += step;
    base_lr *= factor;
    if (base_lr < stop_factor_lr) base_lr = stop_factor_lr;
  }
  return base_lr;
}

MultiFactorScheduler::MultiFactorScheduler(std::vector<std::int64_t> step_, double factor_,
                                           double base_lr_, std::int64_t warmup_steps_,
                                           double warmup_begin_lr_, WarmupMode warmup_mode_)
    : LRScheduler(base_lr_, warmup_steps_, warmup_begin_lr_, warmup_mode_),
      step(std::move(step_)),
      factor(factor_) {
  FUSEDOPT_CHECK(!step.empty(), ValueError, "step must be a non-empty list of update counts");
  for (std::size_t i = 0; i < step.size(); ++i) {
    FUSEDOPT_CHECK(i == 0 || step[i] > step[i - 1], ValueError,
                   "Schedule step must be an increasing integer list");
    FUSEDOPT_CHECK(step[i] >= 1, ValueError, "Schedule step must be greater or equal than 1 round");
  }
  FUSEDOPT_CHECK(!(factor > 1.0), ValueError, "Factor must be no more than 1 to make lr reduce");
}

double MultiFactorScheduler::operator()(std::int64_t num_update) {
  if (num_update < warmup_steps) return get_warmup_lr(num_update);
  while (cur_step_ind < static_cast<std::int64_t>(step.size())) {
    const std::int64_t s = step[static_cast<std::size_t>(cur_step_ind)];
    if (num_update <= s) return base_lr;
    count = s;
    ++cur_step_ind;
    base_lr *= factor;
  }
  return base_lr;
}

PolyScheduler::PolyScheduler(std::int64_t max_update_, double base_lr_, double pwr,
                             double final_lr_, std::int64_t warmup_steps_, double warmup_begin_lr_,
                             WarmupMode warmup_mode_)
    : LRScheduler(base_lr_, warmup_steps_, warmup_begin_lr_, warmup_mode_),
      power(pwr),
      base_lr_orig(base_lr_),
      max_update(max_update_),
      final_lr(final_lr_),
      max_steps(max_update_ - warmup_steps_) {
  FUSEDOPT_CHECK(max_update >= 1, ValueError, "maximum number of updates must be strictly positive");
}

double PolyScheduler::operator()(std::int64_t num_update) {
  if (num_update < warmup_steps) return get_warmup_lr(num_update);
  if (num_update <= max_update)
    base_lr = final_lr + (base_lr_orig - final_lr) *
                             std::pow(1.0 - static_cast<double>(num_update - warmup_steps) /
                                                static_cast<double>(max_steps),
                                      power);
  return base_lr;
}

CosineScheduler::CosineScheduler(std::int64_t max_update_, double base_lr_, double final_lr_,
                                 std::int64_t warmup_steps_, double warmup_begin_lr_,
                                 WarmupMode warmup_mode_)
    : LRScheduler(base_lr_, warmup_steps_, warmup_begin_lr_, warmup_mode_),
      base_lr_orig(base_lr_),
      max_update(max_update_),
      final_lr(final_lr_),
      max_steps(max_update_ - warmup_steps_) {
  FUSEDOPT_CHECK(max_update >= 1, ValueError, "maximum number of updates must be strictly positive");
}

double CosineScheduler::operator()(std::int64_t num_update) {
  if (num_update < warmup_steps) return get_warmup_lr(num_update);
  const double pi = 3.14159265358979323846;
  if (num_update <= max_update)
    base_lr = final_lr + (base_lr_orig - final_lr) *
                             (1.0 + std::cos(pi * static_cast<double>(num_update - warmup_steps) /
                                             static_cast<double>(max_steps))) /
                             2.0;
  return base_lr;
}

}  // namespace fusedopt
