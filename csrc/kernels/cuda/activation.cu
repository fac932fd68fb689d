// Gated MLP activations: out[r, i] = act(x[r, i]) * x[r, d + i] for x [rows, 2d], out [rows, d].
// A 2-D grid (columns, rows); each thread handles 8 consecutive outputs (16-byte loads when aligned).
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace pio::cuda {
namespace {

struct Silu {
  __device__ float operator()(float x) const { return x / (1.0f + __expf(-x)); }
};
struct GeluErf {
  __device__ float operator()(float x) const { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
};
struct GeluTanh {
  __device__ float operator()(float x) const {
    const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
  }
};

constexpr int kPerThread = 8;
constexpr int kThreads = 128;

template <class T, class Act, bool VECTOR>
__global__ void gated_kernel(T* __restrict__ out, int64_t out_stride, const T* __restrict__ x, int64_t x_stride,
                             int64_t d, Act act) {
  const int64_t row = blockIdx.y;
  const int64_t c0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * kPerThread;
  if (c0 >= d) return;
  const T* gate = x + row * x_stride + c0;
  const T* up = gate + d;
  T* o = out + row * out_stride + c0;
  if constexpr (VECTOR) {  // kPerThread elements are 16 bytes for 16-bit types; fp32 takes two packs
    constexpr int per_pack = 16 / sizeof(T);
#pragma unroll
    for (int p = 0; p < kPerThread / per_pack; ++p) {
      uint4 g = reinterpret_cast<const uint4*>(gate)[p];
      uint4 u = reinterpret_cast<const uint4*>(up)[p];
      uint4 r;
      const T* gv = reinterpret_cast<const T*>(&g);
      const T* uv = reinterpret_cast<const T*>(&u);
      T* rv = reinterpret_cast<T*>(&r);
#pragma unroll
      for (int k = 0; k < per_pack; ++k) rv[k] = from_float<T>(act(to_float(gv[k])) * to_float(uv[k]));
      reinterpret_cast<uint4*>(o)[p] = r;
    }
  } else {
    const int n = int(std::min<int64_t>(kPerThread, d - c0));
    for (int k = 0; k < n; ++k) o[k] = from_float<T>(act(to_float(gate[k])) * to_float(up[k]));
  }
}

int64_t check_gated(const TensorView& out, const TensorView& x) {
  check_cuda(x, "x");
  check_float(x, "x");
  check_ndim(x, "x", 2);
  check_last_dim_contiguous(x, "x");
  PIO_CHECK(x.size(1) % 2 == 0, "x.shape[1] must be even (gate and up halves), got shape ", x.shape_str());
  const int64_t d = x.size(1) / 2;
  check_on_device(out, "out", x.device_index);
  check_ndim(out, "out", 2);
  check_dim(out, "out", 0, x.size(0));
  check_dim(out, "out", 1, d);
  check_last_dim_contiguous(out, "out");
  check_same_dtype(out, "out", x, "x");
  PIO_CHECK(x.size(0) <= 65535, "x has ", x.size(0), " rows; the cuda kernel takes at most 65535");
  return d;
}

template <class Act>
void launch(const TensorView& out, const TensorView& x, int64_t d, Act act, const char* name) {
  if (x.size(0) == 0 || d == 0) return;
  DeviceGuard guard(x);
  PIO_CUDA_DISPATCH_FLOAT(x.dtype, name, [&] {
    using T = scalar_t;
    T* o = static_cast<T*>(out.data);
    const T* xi = static_cast<const T*>(x.data);
    const dim3 grid(unsigned(ceil_div(d, int64_t(kThreads) * kPerThread)), unsigned(x.size(0)));
    constexpr int vec = 16 / sizeof(T);
    const bool vector = d % kPerThread == 0 && x.stride(0) % vec == 0 && out.stride(0) % vec == 0 &&
                        (reinterpret_cast<uintptr_t>(xi) & 15u) == 0 && (reinterpret_cast<uintptr_t>(o) & 15u) == 0 &&
                        (d * int64_t(sizeof(T))) % 16 == 0;
    if (vector)
      gated_kernel<T, Act, true><<<grid, kThreads, 0, stream_of(x)>>>(o, out.stride(0), xi, x.stride(0), d, act);
    else
      gated_kernel<T, Act, false><<<grid, kThreads, 0, stream_of(x)>>>(o, out.stride(0), xi, x.stride(0), d, act);
  });
  check_launch(name);
}

}  // namespace

void silu_and_mul(const TensorView& out, const TensorView& x) {
  launch(out, x, check_gated(out, x), Silu{}, "silu_and_mul");
}

void gelu_and_mul(const TensorView& out, const TensorView& x, const std::string& approximate) {
  const int64_t d = check_gated(out, x);
  PIO_CHECK(approximate == "none" || approximate == "tanh", "approximate must be 'none' or 'tanh', got '",
            approximate, "'");
  if (approximate == "tanh") launch(out, x, d, GeluTanh{}, "gelu_and_mul");
  else launch(out, x, d, GeluErf{}, "gelu_and_mul");
}

}  // namespace pio::cuda
