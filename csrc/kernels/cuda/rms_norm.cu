// RMSNorm and residual-add + RMSNorm: one block per row, 16-byte vector loads where the row allows,
// warp-shuffle block reductions, float32 accumulation, one rounding of the output.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <utility>

namespace pio::cuda {
namespace {

template <class T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <class T, class W, int VEC>
__global__ void rms_norm_kernel(T* __restrict__ out, int64_t out_stride, const T* __restrict__ x, int64_t x_stride,
                                const W* __restrict__ w, int64_t hidden, float eps) {
  __shared__ float scratch[32];
  using P = Pack<T, VEC>;
  const P* xr = reinterpret_cast<const P*>(x + blockIdx.x * x_stride);
  P* orow = reinterpret_cast<P*>(out + blockIdx.x * out_stride);
  const int64_t n = hidden / VEC;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const P p = xr[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float f = to_float(p.v[k]);
      ss += f * f;
    }
  }
  const float rstd = rsqrtf(block_sum(ss, scratch) / float(hidden) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const P p = xr[i];
    P o;
#pragma unroll
    for (int k = 0; k < VEC; ++k) o.v[k] = from_float<T>(to_float(p.v[k]) * rstd * to_float(w[i * VEC + k]));
    orow[i] = o;
  }
}

// residual += x (rounded to its dtype); x = rms_norm(residual) * w.
template <class T, class W, int VEC>
__global__ void fused_add_rms_norm_kernel(T* __restrict__ x, int64_t x_stride, T* __restrict__ residual,
                                          int64_t res_stride, const W* __restrict__ w, int64_t hidden, float eps) {
  __shared__ float scratch[32];
  using P = Pack<T, VEC>;
  P* xr = reinterpret_cast<P*>(x + blockIdx.x * x_stride);
  P* rr = reinterpret_cast<P*>(residual + blockIdx.x * res_stride);
  const int64_t n = hidden / VEC;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const P a = xr[i];
    P r = rr[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      r.v[k] = from_float<T>(to_float(r.v[k]) + to_float(a.v[k]));
      const float f = to_float(r.v[k]);
      ss += f * f;
    }
    rr[i] = r;
  }
  const float rstd = rsqrtf(block_sum(ss, scratch) / float(hidden) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const P r = rr[i];  // written by this same thread above
    P o;
#pragma unroll
    for (int k = 0; k < VEC; ++k) o.v[k] = from_float<T>(to_float(r.v[k]) * rstd * to_float(w[i * VEC + k]));
    xr[i] = o;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// 16-byte packs when every row start is 16-byte aligned and the row is a whole number of packs.
template <class T>
bool can_vectorize(int64_t hidden, std::initializer_list<std::pair<const void*, int64_t>> rows) {
  constexpr int vec = 16 / sizeof(T);
  if (hidden % vec) return false;
  for (auto [ptr, stride] : rows)
    if (!aligned16(ptr) || stride % vec) return false;
  return true;
}

int threads_for(int64_t packs) {
  int64_t t = ((packs + 31) / 32) * 32;
  return int(std::min<int64_t>(1024, std::max<int64_t>(32, t)));
}

void check_rows(const TensorView& t, const char* name, int64_t rows, int64_t hidden, int device) {
  check_on_device(t, name, device);
  check_ndim(t, name, 2);
  check_dim(t, name, 0, rows);
  check_dim(t, name, 1, hidden);
  check_last_dim_contiguous(t, name);
}

void check_weight(const TensorView& w, const TensorView& x, int device) {
  check_on_device(w, "weight", device);
  check_ndim(w, "weight", 1);
  check_dim(w, "weight", 0, x.size(1));
  check_contiguous(w, "weight");
  PIO_CHECK(w.dtype == x.dtype || w.dtype == DType::Float32, "weight must be float32 or x's dtype (",
            dtype_name(x.dtype), "), got ", dtype_name(w.dtype));
}

template <class F>
void with_weight(const TensorView& w, F&& f) {
  PIO_CUDA_DISPATCH_FLOAT(w.dtype, "weight", [&] { f(static_cast<const scalar_t*>(w.data)); });
}

}  // namespace

void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, double eps) {
  check_float(x, "x");
  const int device = x.device_index;
  check_rows(x, "x", x.size(0), x.ndim == 2 ? x.size(1) : 0, device);
  check_rows(out, "out", x.size(0), x.size(1), device);
  check_same_dtype(out, "out", x, "x");
  check_weight(weight, x, device);
  const int64_t rows = x.size(0), hidden = x.size(1);
  if (rows == 0 || hidden == 0) return;
  DeviceGuard guard(x);
  PIO_CUDA_DISPATCH_FLOAT(x.dtype, "x", [&] {
    using T = scalar_t;
    T* o = static_cast<T*>(out.data);
    const T* xi = static_cast<const T*>(x.data);
    with_weight(weight, [&](auto* w) {
      using W = std::remove_const_t<std::remove_pointer_t<decltype(w)>>;
      constexpr int vec = 16 / sizeof(T);
      if (can_vectorize<T>(hidden, {{o, out.stride(0)}, {xi, x.stride(0)}})) {
        rms_norm_kernel<T, W, vec><<<rows, threads_for(hidden / vec), 0, stream_of(x)>>>(
            o, out.stride(0), xi, x.stride(0), w, hidden, float(eps));
      } else {
        rms_norm_kernel<T, W, 1><<<rows, threads_for(hidden), 0, stream_of(x)>>>(o, out.stride(0), xi, x.stride(0), w,
                                                                                 hidden, float(eps));
      }
    });
  });
  check_launch("rms_norm");
}

void fused_add_rms_norm(const TensorView& x, const TensorView& residual, const TensorView& weight, double eps) {
  check_float(x, "x");
  const int device = x.device_index;
  check_rows(x, "x", x.size(0), x.ndim == 2 ? x.size(1) : 0, device);
  check_rows(residual, "residual", x.size(0), x.size(1), device);
  check_same_dtype(residual, "residual", x, "x");
  check_weight(weight, x, device);
  const int64_t rows = x.size(0), hidden = x.size(1);
  if (rows == 0 || hidden == 0) return;
  DeviceGuard guard(x);
  PIO_CUDA_DISPATCH_FLOAT(x.dtype, "x", [&] {
    using T = scalar_t;
    T* xi = static_cast<T*>(x.data);
    T* r = static_cast<T*>(residual.data);
    with_weight(weight, [&](auto* w) {
      using W = std::remove_const_t<std::remove_pointer_t<decltype(w)>>;
      constexpr int vec = 16 / sizeof(T);
      if (can_vectorize<T>(hidden, {{xi, x.stride(0)}, {r, residual.stride(0)}})) {
        fused_add_rms_norm_kernel<T, W, vec><<<rows, threads_for(hidden / vec), 0, stream_of(x)>>>(
            xi, x.stride(0), r, residual.stride(0), w, hidden, float(eps));
      } else {
        fused_add_rms_norm_kernel<T, W, 1><<<rows, threads_for(hidden), 0, stream_of(x)>>>(
            xi, x.stride(0), r, residual.stride(0), w, hidden, float(eps));
      }
    });
  });
  check_launch("fused_add_rms_norm");
}

}  // namespace pio::cuda
