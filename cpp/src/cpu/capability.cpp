// capability.cpp — picks the CPU kernel table once (cpuid), honours FUSEDOPT_CPU_CAPABILITY, and lets
// tests force a capability. Compiled with baseline flags only.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "check.h"
#include "engine.h"
#include "fusedopt/cpu_capability.h"

namespace fusedopt::detail {

CpuKernelTable make_cpu_kernels_baseline();
#if FUSEDOPT_HAVE_CPU_AVX2
CpuKernelTable make_cpu_kernels_avx2();
#endif
#if FUSEDOPT_HAVE_CPU_AVX512
CpuKernelTable make_cpu_kernels_avx512();
#endif

namespace {

struct Capability {
  const char* name;
  CpuKernelTable (*make)();
  bool (*cpu_has)();
};

bool always() { return true; }
#if FUSEDOPT_HAVE_CPU_AVX2
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
#endif
#if FUSEDOPT_HAVE_CPU_AVX512
bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#endif

/// Every compiled capability, lowest first.
const std::vector<Capability>& compiled() {
  static const std::vector<Capability> caps = {
      {"baseline", &make_cpu_kernels_baseline, &always},
#if FUSEDOPT_HAVE_CPU_AVX2
      {"avx2", &make_cpu_kernels_avx2, &has_avx2},
#endif
#if FUSEDOPT_HAVE_CPU_AVX512
      {"avx512", &make_cpu_kernels_avx512, &has_avx512},
#endif
  };
  return caps;
}

// Tables are built once and never freed; `current` points at one of them. Reads are lock-free (the
// hot path); set_cpu_capability() swaps the pointer.
std::mutex g_mutex;
std::vector<CpuKernelTable>* g_tables = nullptr;
std::atomic<const CpuKernelTable*> g_current{nullptr};

std::string supported_list() {
  std::string out;
  for (const auto& c : compiled()) {
    if (!c.cpu_has()) continue;
    if (!out.empty()) out += ", ";
    out += c.name;
  }
  return out;
}

/// Validates `name` and returns its table; g_mutex held and g_tables built.
const CpuKernelTable* checked_table(const std::string& name, const char* origin) {
  const auto& caps = compiled();
  for (std::size_t i = 0; i < caps.size(); ++i) {
    if (name != caps[i].name) continue;
    FUSEDOPT_CHECK(caps[i].cpu_has(), ValueError, origin, ": CPU capability '", name,
                   "' is not supported by this CPU (supported: ", supported_list(), ")");
    return &(*g_tables)[i];
  }
  throw_error<ValueError>(origin, ": unknown CPU capability '", name,
                          "' (expected one of: ", supported_list(), ")");
}

void build_tables_locked() {
  if (g_tables != nullptr) return;
  auto* tables = new std::vector<CpuKernelTable>();
  for (const auto& c : compiled()) tables->push_back(c.make());
  g_tables = tables;
}

const CpuKernelTable* init_locked() {
  build_tables_locked();
  const CpuKernelTable* chosen = nullptr;
  const char* env = std::getenv("FUSEDOPT_CPU_CAPABILITY");
  if (env != nullptr && *env != '\0') {
    chosen = checked_table(env, "FUSEDOPT_CPU_CAPABILITY");
  } else {
    const auto& caps = compiled();
    for (std::size_t i = 0; i < caps.size(); ++i)
      if (caps[i].cpu_has()) chosen = &(*g_tables)[i];
  }
  g_current.store(chosen, std::memory_order_release);
  return chosen;
}

}  // namespace

const CpuKernelTable& cpu_kernels() {
  const CpuKernelTable* t = g_current.load(std::memory_order_acquire);
  if (t != nullptr) return *t;
  std::lock_guard<std::mutex> lock(g_mutex);
  t = g_current.load(std::memory_order_acquire);
  return t != nullptr ? *t : *init_locked();
}

}  // namespace fusedopt::detail

namespace fusedopt {

std::string cpu_capability() { return detail::cpu_kernels().name; }

std::vector<std::string> supported_cpu_capabilities() {
  std::vector<std::string> out;
  for (const auto& c : detail::compiled())
    if (c.cpu_has()) out.emplace_back(c.name);
  return out;
}

void set_cpu_capability(const std::string& name) {
  // An explicit choice overrides FUSEDOPT_CPU_CAPABILITY: an invalid value there must not stop it.
  std::lock_guard<std::mutex> lock(detail::g_mutex);
  detail::build_tables_locked();
  detail::g_current.store(detail::checked_table(name, "set_cpu_capability"),
                          std::memory_order_release);
}

int cpu_num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace fusedopt
