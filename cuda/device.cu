// device.cu — fusedopt::cuda_device_count(): the runtime answer to "can the CUDA kernels run here?".
#include <cuda_runtime.h>

#include "fusedopt/cuda.h"

namespace fusedopt {

int cuda_device_count() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    // cudaErrorNoDevice, cudaErrorInsufficientDriver (no driver at all: the runtime is linked
    // statically, so the module still loads), a driver older than the runtime, ...: no usable device.
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace fusedopt
