// cpu_capability.h — which CPU kernel variant runs: detected once by cpuid, overridable by the
// FUSEDOPT_CPU_CAPABILITY environment variable (baseline | avx2 | avx512) or set_cpu_capability().
#pragma once

#include <string>
#include <vector>

namespace fusedopt {

/// The capability in use ("baseline", "avx2" or "avx512").
std::string cpu_capability();
/// The capabilities compiled in and supported by this CPU, lowest first.
std::vector<std::string> supported_cpu_capabilities();
/// Force a capability; throws ValueError for a name that is unknown, not compiled in, or not supported
/// by this CPU.
void set_cpu_capability(const std::string& name);

/// Number of threads the CPU kernels use (OpenMP's maximum; 1 without OpenMP).
int cpu_num_threads();

}  // namespace fusedopt
