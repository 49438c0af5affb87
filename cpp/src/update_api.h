// update_api.h — the one validated path from the public operators (sgd.cpp, dcasgd.cpp) to the kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "engine.h"
#include "fusedopt/params.h"
#include "validate.h"

namespace fusedopt::detail {

/// Operands of n tensors; unused arrays are null. Names label arguments in messages
/// (single-tensor operators pass n = 1 and singular names; multi_* pass plural names and index them).
struct OperandSet {
  std::int64_t n = 0;
  const TensorView* weights = nullptr;
  const TensorView* grads = nullptr;
  const TensorView* moms = nullptr;
  const TensorView* prevs = nullptr;  ///< DCASGD anchor: previous weights, or backups (kBackup*)
  const TensorView* mss = nullptr;    ///< mean squares (adaptive rules)
  const TensorView* masters = nullptr;
  const double* lrs = nullptr;
  const double* wds = nullptr;
  const LossScale* loss_scale = nullptr;  ///< aggregated calls: optional GradScaler operands
  bool indexed = false;  ///< multi_* operator: labels carry the tensor index
  const char* weight_name = "weight";
  const char* grad_name = "grad";
  const char* mom_name = "mom";
  const char* prev_name = "prev";
  const char* ms_name = "mean_square";
  const char* master_name = "weight32";
};

/// The operands of an aggregated (multi_*) call over n tensors: lists given as pointers to their first
/// view (null for an absent list), labels plural and indexed ("moms[3]").
OperandSet list_operands(std::size_t n, const TensorView* weights, const TensorView* grads,
                         const TensorView* moms, const TensorView* prevs, const TensorView* masters,
                         const double* lrs, const double* wds);

/// One list argument of an aggregated call and its length.
struct ListSize {
  const char* name;
  std::size_t size;
};
/// ValueError unless every list has `n` entries (one per weight).
void check_list_sizes(const char* op, std::size_t n, std::initializer_list<ListSize> lists);

/// Validates every operand and scalar of the call, then runs it (grouped by weight dtype). With
/// `dry_run` it only validates (the Python reference path checks its arguments this way).
void checked_update(const char* op, RuleKind rule, bool master, const OperandSet& ops,
                    const SharedScalars& shared, Stream stream, bool dry_run = false);

}  // namespace fusedopt::detail
