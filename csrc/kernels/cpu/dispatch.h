// Dtype dispatch and the per-family binding registry of the CPU module.
#pragma once
#include <pybind11/pybind11.h>

#include <vector>

#include "float_types.h"
#include "pio/checks.h"
#include "pio/tensor_view.h"

namespace pio::cpu {

// Runs body with scalar_t bound to the C++ storage type of a float tensor.
#define PIO_DISPATCH_FLOAT(dtype, name, ...)                                              \
  [&] {                                                                                   \
    switch (dtype) {                                                                      \
      case ::pio::DType::Float32: { using scalar_t = float; return __VA_ARGS__(); }           \
      case ::pio::DType::Float16: { using scalar_t = ::pio::cpu::Half; return __VA_ARGS__(); } \
      case ::pio::DType::BFloat16: { using scalar_t = ::pio::cpu::BFloat16; return __VA_ARGS__(); } \
      default: ::pio::fail(name, ": unsupported dtype ", ::pio::dtype_name(dtype));      \
    }                                                                                     \
  }()

using BindFn = void (*)(pybind11::module_&);
inline std::vector<BindFn>& bind_functions() {
  static std::vector<BindFn> fns;
  return fns;
}
struct BindRegistrar {
  explicit BindRegistrar(BindFn fn) { bind_functions().push_back(fn); }
};

}  // namespace pio::cpu

// Each kernel file ends with PIO_CPU_BINDINGS(family) { m.def(...); } — no central list to edit.
#define PIO_CPU_BINDINGS(family)                                                     \
  static void pio_bind_##family(pybind11::module_& m);                               \
  static ::pio::cpu::BindRegistrar pio_bind_registrar_##family(&pio_bind_##family); \
  static void pio_bind_##family(pybind11::module_& m)

// Binding option: kernels run without the GIL.
#define PIO_NOGIL pybind11::call_guard<pybind11::gil_scoped_release>()
