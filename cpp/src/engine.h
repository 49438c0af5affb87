// engine.h — the internal interface between the validating API (sgd.cpp, dcasgd.cpp) and the kernels
// (cpu/, cuda/). Everything reaching this layer has been validated; kernels trust their inputs.
#pragma once

#include <cstdint>

#include "fusedopt/dtype.h"
#include "fusedopt/tensor_view.h"
#include "fusedopt/version.h"

namespace fusedopt::detail {

/// The element rule of a launch (rules/update_rules.h). The DCASGD kinds differ in where the
/// compensation's anchor comes from and in lambda:
///   kDcasgd / kDcasgdAdaptive: MXNet's form, anchor = `prev` (the previous weight), rewritten to the
///                              weight before the update by every update;
///   kBackup / kBackupAdaptive: the paper's form, anchor = `prev` holding a backup that is only read;
///   *Adaptive: lambda_t = lamda / sqrt(ms + eps) with the running mean square `ms` updated first.
enum class RuleKind : std::uint8_t { kSgd, kDcasgd, kDcasgdAdaptive, kBackup, kBackupAdaptive };

/// The rule reads an anchor (previous weight or backup) through Segment::prev.
FUSEDOPT_HD constexpr bool rule_has_anchor(RuleKind r) { return r != RuleKind::kSgd; }
/// The rule writes its anchor (MXNet's previous weight); backups are only read.
FUSEDOPT_HD constexpr bool rule_writes_anchor(RuleKind r) {
  return r == RuleKind::kDcasgd || r == RuleKind::kDcasgdAdaptive;
}
/// The rule reads and writes the running mean square Segment::ms (adaptive lambda).
FUSEDOPT_HD constexpr bool rule_adaptive(RuleKind r) {
  return r == RuleKind::kDcasgdAdaptive || r == RuleKind::kBackupAdaptive;
}

/// Which instantiation of the update loop runs. With `master`, the weight is float16/bfloat16, the
/// gradient has the weight's dtype, and master weight, momentum and prev are float32; the rule runs on
/// the master and the weight is written as cast(master) (backup and mean square are float32 too).
/// Without it every operand has weight_dtype.
struct UpdateKind {
  DType weight_dtype = DType::kFloat32;
  RuleKind rule = RuleKind::kSgd;
  bool momentum = false;
  bool master = false;
};

/// One contiguous run of elements updated with one lr / wd (a tensor, or a row of a row-sparse update).
/// Unused operands are null. `g == nullptr` means a zero gradient (rows a row-sparse gradient does not
/// store, in the standard update). `prev` is the DCASGD anchor: MXNet's previous weight (written) or a
/// backup (kBackup*: only read, possibly a read-only array). `ms` is the mean square (adaptive rules).
struct Segment {
  void* w = nullptr;
  const void* g = nullptr;
  void* m = nullptr;
  void* prev = nullptr;
  void* ms = nullptr;
  float* w32 = nullptr;
  std::int64_t n = 0;
  double lr = 0.0;
  double wd = 0.0;
};

/// Scalars shared by every segment of a call. `clip` is +inf when clipping is off. `ms_decay` and `eps`
/// are used by the adaptive rules only.
struct SharedScalars {
  double momentum = 0.0;
  double rescale_grad = 1.0;
  double clip = 0.0;
  double lamda = 0.0;
  double ms_decay = 0.0;
  double eps = 0.0;
  /// Loss scaling read on the device (CUDA launches only; the CPU path folds both into rescale_grad
  /// before launching and leaves them null): one float each, null when absent. With *found_inf != 0
  /// the launch writes nothing; with grad_scale the rescale factor is scaled_rescale(rescale_grad,
  /// *grad_scale).
  const float* grad_scale = nullptr;
  const float* found_inf = nullptr;
};

/// The rescale factor of a call whose gradients carry a loss scale: rescale_grad * (1 / scale) in
/// double (as the unscaled step folds it), rounded to the compute type by the caller. The one
/// formula for every backend.
FUSEDOPT_HD double scaled_rescale(double rescale_grad, float scale) {
  return rescale_grad * (1.0 / static_cast<double>(scale));
}

/// A row-sparse update of a (rows x row_len) weight. `whole` points at row 0 of every dense operand.
/// Lazy: rows indices[k] get gradient row k. Standard: every row r gets gradient row row_to_k[r], or a
/// zero gradient when row_to_k[r] < 0.
struct RowSparseTask {
  Segment whole;
  std::int64_t rows = 0;
  std::int64_t row_len = 0;
  const void* grad_rows = nullptr;
  const std::int64_t* indices = nullptr;
  std::int64_t num_indices = 0;
  const std::int64_t* row_to_k = nullptr;
  bool lazy = true;
};

/// One table of CPU kernels per compiled capability. See cpu/README.md.
struct CpuKernelTable {
  const char* name;
  void (*update)(const UpdateKind& kind, const Segment* segs, std::int64_t nseg,
                 const SharedScalars& s);
  void (*update_rows)(const UpdateKind& kind, const RowSparseTask& task, const SharedScalars& s);
};

/// The table in use (chosen once; see cpu/capability.cpp).
const CpuKernelTable& cpu_kernels();

#if FUSEDOPT_WITH_CUDA
/// CUDA launchers (cuda/); same contracts as the CPU table, on the given stream and device.
void cuda_update(const UpdateKind& kind, const Segment* segs, std::int64_t nseg,
                 const SharedScalars& s, Device device, Stream stream);
void cuda_update_rows(const UpdateKind& kind, const RowSparseTask& task, const SharedScalars& s,
                      Device device, Stream stream);
#endif

}  // namespace fusedopt::detail
