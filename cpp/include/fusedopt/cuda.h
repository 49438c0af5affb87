// cuda.h — whether this build has CUDA kernels, and how many devices can run them.
#pragma once

#include "fusedopt/version.h"

namespace fusedopt {

/// True when fusedopt was compiled with its CUDA kernels (configure-time fact, FUSEDOPT_WITH_CUDA).
constexpr bool built_with_cuda() { return FUSEDOPT_WITH_CUDA != 0; }

#if FUSEDOPT_WITH_CUDA
/// Number of CUDA devices the kernels can use (runtime answer). 0 when there is no GPU or no (or too
/// old a) driver: the CUDA runtime is linked statically, so a CUDA build loads and runs its CPU paths
/// on any machine. Never throws.
int cuda_device_count();
#else
inline int cuda_device_count() { return 0; }
#endif

}  // namespace fusedopt
