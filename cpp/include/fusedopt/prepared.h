// prepared.h — a validated, reusable aggregated update for the many-small-tensors case: the arrays of
// every parameter are registered (and validated) once; each step passes only scalars.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "fusedopt/tensor_view.h"

namespace fusedopt {

/// Aggregated SGD / DCASGD update over a fixed set of arrays. Construction runs every check the
/// matching multi_* / dcasgd operator would (same errors); step() then only checks its scalars and
/// launches, one OpenMP region (or CUDA launch) per weight dtype. The arrays must stay alive, keep their
/// addresses and be refilled in place between steps (gradients included); tensor k is updated with
/// lr * lr_mult[k] and wd * wd_mult[k].
class PreparedUpdate {
 public:
  /// SGD: `moms` empty = no momentum; `weights32` non-empty = multi-precision (float32 masters, and
  /// float32 moms). `lr_mult` / `wd_mult` empty = all 1.
  static PreparedUpdate sgd(std::vector<TensorView> weights, std::vector<TensorView> grads,
                            std::vector<TensorView> moms, std::vector<TensorView> weights32,
                            std::vector<double> lr_mult = {}, std::vector<double> wd_mult = {});
  /// DCASGD: `moms` empty = no momentum; `prevs` required; `weights32` non-empty = multi-precision.
  static PreparedUpdate dcasgd(std::vector<TensorView> weights, std::vector<TensorView> grads,
                               std::vector<TensorView> moms, std::vector<TensorView> prevs,
                               std::vector<TensorView> weights32, std::vector<double> lr_mult = {},
                               std::vector<double> wd_mult = {});
  /// DCASGD with the adaptive lambda (DC-ASGD-a on MXNet's form, `multi_dcasgd_update` with
  /// `mean_squares`): one mean square per weight (float32 with masters, else the weight's dtype).
  static PreparedUpdate dcasgd_adaptive(std::vector<TensorView> weights,
                                        std::vector<TensorView> grads, std::vector<TensorView> moms,
                                        std::vector<TensorView> prevs,
                                        std::vector<TensorView> mean_squares,
                                        std::vector<TensorView> weights32,
                                        std::vector<double> lr_mult = {},
                                        std::vector<double> wd_mult = {});

  PreparedUpdate(PreparedUpdate&&) noexcept;
  PreparedUpdate& operator=(PreparedUpdate&&) noexcept;
  ~PreparedUpdate();

  /// One step. `momentum` is ignored without momentum buffers, `lamda` for SGD, `ms_decay` and
  /// `eps` unless the update is adaptive (then 0 <= ms_decay < 1 and eps > 0, as the operators).
  void step(double lr, double wd, double momentum = 0.0, double rescale_grad = 1.0,
            std::optional<double> clip_gradient = std::nullopt, double lamda = 0.04,
            double ms_decay = 0.95, double eps = 1e-7, Stream stream = {});

  /// The checks step() makes before writing, for the same scalars; writes nothing. A caller that
  /// steps several prepared updates as one call checks them all first.
  void check(double lr, double wd, double momentum = 0.0, double rescale_grad = 1.0,
             std::optional<double> clip_gradient = std::nullopt, double lamda = 0.04,
             double ms_decay = 0.95, double eps = 1e-7) const;

  /// Number of tensors registered.
  std::size_t size() const;

  struct Impl;  ///< opaque

 private:
  explicit PreparedUpdate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fusedopt
