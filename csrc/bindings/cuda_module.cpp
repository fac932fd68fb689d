// The CUDA extension module. Kernel files in csrc/kernels/cuda/ add their bindings here
// as they land; until then it reports how it was built.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include "pio/pybind_tensor_view.h"

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "inference-pio CUDA C++ kernels";
  pio::register_exceptions(m);
  m.attr("archs") = PIO_CUDA_ARCHS;
  m.attr("cuda_runtime_version") = CUDART_VERSION;
  m.def("device_count", [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  });
}
