// Argument validation for kernels: every failure becomes a Python ValueError naming the argument.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

#include "pio/tensor_view.h"

namespace pio {

// Translated to ValueError by the bindings (see pio/pybind_tensor_view.h).
struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

template <class... Args>
[[noreturn]] inline void fail(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw ArgumentError(os.str());
}

#define PIO_CHECK(cond, ...)              \
  do {                                    \
    if (!(cond)) ::pio::fail(__VA_ARGS__); \
  } while (0)

inline void check_ndim(const TensorView& t, const char* name, int ndim) {
  PIO_CHECK(t.ndim == ndim, name, " must have ", ndim, " dimensions, got shape ", t.shape_str());
}
inline void check_dim(const TensorView& t, const char* name, int dim, int64_t size) {
  PIO_CHECK(t.size(dim) == size, name, ".shape[", dim, "] must be ", size, ", got shape ", t.shape_str());
}
inline void check_cpu(const TensorView& t, const char* name) {
  PIO_CHECK(t.device == DeviceType::CPU, name, " must be a CPU tensor for the cpu backend");
}
inline void check_cuda(const TensorView& t, const char* name) {
  PIO_CHECK(t.device == DeviceType::CUDA, name, " must be a CUDA tensor for the cuda backend");
}
inline void check_float(const TensorView& t, const char* name) {
  PIO_CHECK(t.dtype == DType::Float32 || t.dtype == DType::Float16 || t.dtype == DType::BFloat16, name,
            " must be float32, float16 or bfloat16, got ", dtype_name(t.dtype));
}
inline void check_dtype(const TensorView& t, const char* name, DType dtype) {
  PIO_CHECK(t.dtype == dtype, name, " must be ", dtype_name(dtype), ", got ", dtype_name(t.dtype));
}
inline void check_same_dtype(const TensorView& a, const char* an, const TensorView& b, const char* bn) {
  PIO_CHECK(a.dtype == b.dtype, an, " and ", bn, " must have the same dtype, got ", dtype_name(a.dtype), " and ",
            dtype_name(b.dtype));
}
inline void check_contiguous(const TensorView& t, const char* name) {
  PIO_CHECK(t.is_contiguous(), name, " must be contiguous");
}
inline void check_last_dim_contiguous(const TensorView& t, const char* name) {
  PIO_CHECK(t.ndim > 0 && (t.stride(-1) == 1 || t.size(-1) == 1), name, " must have a contiguous last dimension");
}
inline void check_not_null(const TensorView& t, const char* name) {
  PIO_CHECK(t.data != nullptr || t.numel() == 0, name, " has no data pointer");
}

}  // namespace pio
