// cuda_check.h — FUSEDOPT_CUDA_CHECK(expr): turn a failed CUDA runtime call into a fusedopt::Error whose
// message carries cudaGetErrorString. Plain C++ (no device code), so host-only tests may include it.
#pragma once

#include <cuda_runtime_api.h>

#include "check.h"
#include "fusedopt/errors.h"

namespace fusedopt::detail {

/// Throws fusedopt::Error for `err`. Clears the runtime's last-error slot first, so a later
/// cudaGetLastError() after an unrelated launch does not report this failure a second time.
[[noreturn]] inline void cuda_fail(cudaError_t err, const char* expr, const char* file, int line) {
  (void)cudaGetLastError();
  throw_error<Error>("fusedopt: CUDA error: ", cudaGetErrorString(err), " (", cudaGetErrorName(err),
                     ") from ", expr, " at ", file, ":", line);
}

}  // namespace fusedopt::detail

/// FUSEDOPT_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream)); also after every launch with
/// FUSEDOPT_CUDA_CHECK(cudaGetLastError()).
#define FUSEDOPT_CUDA_CHECK(expr)                                                    \
  do {                                                                               \
    const cudaError_t fusedopt_cuda_err_ = (expr);                                   \
    if (fusedopt_cuda_err_ != cudaSuccess)                                           \
      ::fusedopt::detail::cuda_fail(fusedopt_cuda_err_, #expr, __FILE__, __LINE__);  \
  } while (0)
