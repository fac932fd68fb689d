// RMSNorm and residual-add + RMSNorm over rows of [num_rows, hidden] (row stride allowed,
// hidden contiguous). float32 accumulation; one rounding to the output dtype.
#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"
#include "vec.h"

namespace pio::cpu {
namespace {

constexpr int64_t kMinElemsPerThread = 1 << 14;

template <class T>
float sum_squares(const T* x, int64_t n) {
  constexpr int N = VecF::N;
  VecF acc0 = VecF::zero(), acc1 = VecF::zero();
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    VecF a = load(x + i), b = load(x + i + N);
    acc0 = fmadd(a, a, acc0);
    acc1 = fmadd(b, b, acc1);
  }
  for (; i + N <= n; i += N) {
    VecF a = load(x + i);
    acc0 = fmadd(a, a, acc0);
  }
  if (i < n) {
    VecF a = load_partial(x + i, int(n - i));
    acc1 = fmadd(a, a, acc1);
  }
  return reduce_add(acc0 + acc1);
}

// out[i] = x[i] * rstd * w[i]
template <class T, class W>
void scale_row(T* out, const T* x, const W* w, float rstd, int64_t n) {
  constexpr int N = VecF::N;
  VecF r = VecF::broadcast(rstd);
  int64_t i = 0;
  for (; i + N <= n; i += N) store(out + i, load(x + i) * r * load(w + i));
  if (i < n) {
    int t = int(n - i);
    store_partial(out + i, load_partial(x + i, t) * r * load_partial(w + i, t), t);
  }
}

// residual[i] = rounded(residual[i] + x[i])
template <class T>
void add_into(T* residual, const T* x, int64_t n) {
  constexpr int N = VecF::N;
  int64_t i = 0;
  for (; i + N <= n; i += N) store(residual + i, load(residual + i) + load(x + i));
  if (i < n) {
    int t = int(n - i);
    store_partial(residual + i, load_partial(residual + i, t) + load_partial(x + i, t), t);
  }
}

template <class T, class W>
void rms_norm_impl(const TensorView& out, const TensorView& x, const TensorView& weight, float eps) {
  const int64_t rows = x.size(0), n = x.size(1);
  const int64_t xs = x.stride(0), os = out.stride(0);
  const T* xp = x.ptr<T>();
  T* op = out.ptr<T>();
  const W* wp = weight.ptr<W>();
  parallel_for(rows, std::max<int64_t>(1, kMinElemsPerThread / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* row = xp + r * xs;
      float rstd = 1.0f / std::sqrt(sum_squares(row, n) / float(n) + eps);
      scale_row(op + r * os, row, wp, rstd, n);
    }
  });
}

template <class T, class W>
void fused_add_rms_norm_impl(const TensorView& x, const TensorView& residual, const TensorView& weight, float eps) {
  const int64_t rows = x.size(0), n = x.size(1);
  const int64_t xs = x.stride(0), rs = residual.stride(0);
  T* xp = x.ptr<T>();
  T* rp = residual.ptr<T>();
  const W* wp = weight.ptr<W>();
  parallel_for(rows, std::max<int64_t>(1, kMinElemsPerThread / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* xrow = xp + r * xs;
      T* rrow = rp + r * rs;
      add_into(rrow, xrow, n);  // the norm sees the residual as stored, like the unfused code
      float rstd = 1.0f / std::sqrt(sum_squares(rrow, n) / float(n) + eps);
      scale_row(xrow, rrow, wp, rstd, n);
    }
  });
}

void check_rows(const TensorView& t, const char* name, int64_t hidden) {
  check_cpu(t, name);
  check_ndim(t, name, 2);
  check_dim(t, name, 1, hidden);
  check_last_dim_contiguous(t, name);
}

void check_weight(const TensorView& weight, const TensorView& x, int64_t hidden) {
  check_cpu(weight, "weight");
  check_ndim(weight, "weight", 1);
  check_dim(weight, "weight", 0, hidden);
  check_contiguous(weight, "weight");
  PIO_CHECK(weight.dtype == x.dtype || weight.dtype == DType::Float32, "weight must be float32 or ", dtype_name(x.dtype),
            ", got ", dtype_name(weight.dtype));
}

}  // namespace

// Public entry points (declared in cpu_ops.h, called by the fused decode step in csrc/decoder too).
void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, double eps) {
  check_float(x, "x");
  PIO_CHECK(x.ndim == 2, "x must be 2-D [num_rows, hidden], got shape ", x.shape_str());
  const int64_t hidden = x.size(1);
  check_rows(x, "x", hidden);
  check_rows(out, "out", hidden);
  check_dim(out, "out", 0, x.size(0));
  check_same_dtype(out, "out", x, "x");
  check_weight(weight, x, hidden);
  PIO_DISPATCH_FLOAT(x.dtype, "rms_norm", [&] {
    if (weight.dtype == DType::Float32) rms_norm_impl<scalar_t, float>(out, x, weight, float(eps));
    else rms_norm_impl<scalar_t, scalar_t>(out, x, weight, float(eps));
  });
}

void fused_add_rms_norm(const TensorView& x, const TensorView& residual, const TensorView& weight, double eps) {
  check_float(x, "x");
  PIO_CHECK(x.ndim == 2, "x must be 2-D [num_rows, hidden], got shape ", x.shape_str());
  const int64_t hidden = x.size(1);
  check_rows(x, "x", hidden);
  check_rows(residual, "residual", hidden);
  check_dim(residual, "residual", 0, x.size(0));
  check_same_dtype(residual, "residual", x, "x");
  check_weight(weight, x, hidden);
  PIO_DISPATCH_FLOAT(x.dtype, "fused_add_rms_norm", [&] {
    if (weight.dtype == DType::Float32) fused_add_rms_norm_impl<scalar_t, float>(x, residual, weight, float(eps));
    else fused_add_rms_norm_impl<scalar_t, scalar_t>(x, residual, weight, float(eps));
  });
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(rms_norm) {
  namespace py = pybind11;
  m.def("rms_norm", &pio::cpu::rms_norm, py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("eps"), PIO_NOGIL,
        "out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight; x, out: [rows, hidden]");
  m.def("fused_add_rms_norm", &pio::cpu::fused_add_rms_norm, py::arg("x"), py::arg("residual"), py::arg("weight"),
        py::arg("eps"), PIO_NOGIL, "in place: residual += x; x = rms_norm(residual) * weight");
}
