// test_support.h — helpers shared by the CPU kernel test files: deterministic pseudo-random numbers and
// a guard that forces one CPU capability for the duration of a test.
#pragma once

#include <cstdint>
#include <string>

#include "fusedopt/cpu_capability.h"

namespace fusedopt_test {

// ---- deterministic, cheap pseudo-random numbers (splitmix64) -----------------------------------------

inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
/// Uniform in [-1, 1), a function of (seed, i).
inline double uniform(std::uint64_t seed, std::uint64_t i) {
  return static_cast<double>(mix(seed * 0x100000001B3ull + i) >> 11) * 0x1p-52 - 1.0;
}

/// Forces one capability for the duration of a test and restores the previous one.
class CapabilityGuard {
 public:
  explicit CapabilityGuard(const std::string& cap) : saved_(fusedopt::cpu_capability()) {
    fusedopt::set_cpu_capability(cap);
  }
  ~CapabilityGuard() { fusedopt::set_cpu_capability(saved_); }
  CapabilityGuard(const CapabilityGuard&) = delete;
  CapabilityGuard& operator=(const CapabilityGuard&) = delete;

 private:
  std::string saved_;
};

}  // namespace fusedopt_test
