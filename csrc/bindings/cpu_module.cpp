// The CPU extension module, compiled once per ISA (see cmake/cpu_extension.cmake).
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/parallel.h"
#include "pio/pybind_tensor_view.h"

PYBIND11_MODULE(PIO_MODULE_NAME, m) {
  m.doc() = "inference-pio C++ CPU kernels";
  pio::register_exceptions(m);
  m.attr("isa") = PIO_ISA_NAME;
#if defined(PIO_HAVE_OPENMP)
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.def("num_threads", &pio::cpu::num_threads, "threads the kernels split work over");
  for (auto fn : pio::cpu::bind_functions()) fn(m);
}
