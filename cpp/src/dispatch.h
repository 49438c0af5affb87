// dispatch.h — the one place where a runtime UpdateKind (weight dtype, rule, momentum, master) becomes
// template parameters. Used by the CPU launchers (per ISA, see Note [capability namespace]) and the
// CUDA launchers.
#pragma once

#include <type_traits>

#include "engine.h"

namespace fusedopt::detail {
inline namespace FUSEDOPT_CPU_CAPABILITY {

template <class T>
struct TypeTag {
  using type = T;
};

/// Calls f.template operator()<W, R, kMom, kMaster>() for the instantiation `kind` names. Only valid
/// kinds reach here (the API validated them); master kinds exist for 16-bit weights only.
template <RuleKind R>
using RuleTag = std::integral_constant<RuleKind, R>;

template <class F>
void dispatch_kind(const UpdateKind& kind, F&& f) {
  auto by_flags = [&](auto w_tag, auto master_tag) {
    using W = typename decltype(w_tag)::type;
    constexpr bool kMaster = decltype(master_tag)::value;
    auto by_mom = [&](auto rule_tag) {
      constexpr RuleKind R = decltype(rule_tag)::value;
      if (kind.momentum) f.template operator()<W, R, true, kMaster>();
      else f.template operator()<W, R, false, kMaster>();
    };
    switch (kind.rule) {
      case RuleKind::kSgd: by_mom(RuleTag<RuleKind::kSgd>{}); break;
      case RuleKind::kDcasgd: by_mom(RuleTag<RuleKind::kDcasgd>{}); break;
      case RuleKind::kDcasgdAdaptive: by_mom(RuleTag<RuleKind::kDcasgdAdaptive>{}); break;
      case RuleKind::kBackup: by_mom(RuleTag<RuleKind::kBackup>{}); break;
      case RuleKind::kBackupAdaptive: by_mom(RuleTag<RuleKind::kBackupAdaptive>{}); break;
    }
  };
  using kTrue = std::true_type;
  using kFalse = std::false_type;
  switch (kind.weight_dtype) {
    case DType::kFloat16:
      if (kind.master) by_flags(TypeTag<half>{}, kTrue{});
      else by_flags(TypeTag<half>{}, kFalse{});
      break;
    case DType::kBFloat16:
      if (kind.master) by_flags(TypeTag<bfloat16>{}, kTrue{});
      else by_flags(TypeTag<bfloat16>{}, kFalse{});
      break;
    case DType::kFloat32: by_flags(TypeTag<float>{}, kFalse{}); break;
    case DType::kFloat64: by_flags(TypeTag<double>{}, kFalse{}); break;
  }
}

}  // inline namespace FUSEDOPT_CPU_CAPABILITY
}  // namespace fusedopt::detail
