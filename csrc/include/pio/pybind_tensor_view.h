// pybind11 conversion: a Python tuple (data_ptr, dtype_code, shape, strides, device_type,
// device_index, stream) becomes a pio::TensorView. Tuples keep the per-call cost near 1 µs.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "pio/checks.h"
#include "pio/tensor_view.h"

namespace pybind11::detail {

template <>
struct type_caster<pio::TensorView> {
  PYBIND11_TYPE_CASTER(pio::TensorView, const_name("TensorView"));

  bool load(handle src, bool) {
    if (!isinstance<tuple>(src)) return false;
    auto t = reinterpret_borrow<tuple>(src);
    if (t.size() != 7) return false;
    value.data = reinterpret_cast<void*>(t[0].cast<std::uintptr_t>());
    int code = t[1].cast<int>();
    if (code < 0 || code > 7) throw pio::ArgumentError("tensor view has an unknown dtype code");
    value.dtype = static_cast<pio::DType>(code);
    auto shape = reinterpret_borrow<tuple>(t[2]);
    auto strides = reinterpret_borrow<tuple>(t[3]);
    if (shape.size() > pio::kMaxDims || strides.size() != shape.size())
      throw pio::ArgumentError("tensor view has more than 8 dimensions or mismatched strides");
    value.ndim = static_cast<int>(shape.size());
    for (int i = 0; i < value.ndim; ++i) {
      value.shape[i] = shape[i].cast<int64_t>();
      value.strides[i] = strides[i].cast<int64_t>();
    }
    value.device = static_cast<pio::DeviceType>(t[4].cast<int>());
    value.device_index = t[5].cast<int>();
    value.stream = t[6].cast<std::uintptr_t>();
    return true;
  }
  static handle cast(const pio::TensorView&, return_value_policy, handle) {
    throw cast_error("TensorView cannot be returned to Python");
  }
};

}  // namespace pybind11::detail

namespace pio {
// Registers ArgumentError -> ValueError once per module.
inline void register_exceptions(pybind11::module_& m) {
  pybind11::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  (void)m;
}
}  // namespace pio
