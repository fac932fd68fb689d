// Shared pieces of the CUDA kernels: dtype dispatch, float conversions, launch checks, stream and
// device handling, block reductions. Kernels run on the stream carried by the tensor views (the
// caller's current torch stream) and on the tensors' device.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "pio/checks.h"
#include "pio/tensor_view.h"

namespace pio::cuda {

// A failed launch or CUDA call: becomes RuntimeError in Python. Launch errors are read with
// cudaGetLastError right after the launch, which also clears them (no sticky error is left for
// later, unrelated calls).
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check_cuda_call(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw CudaError(std::string(what) + ": " + cudaGetErrorString(err));
}

inline void check_launch(const char* kernel) {
  check_cuda_call(cudaGetLastError(), kernel);
}

inline cudaStream_t stream_of(const TensorView& t) { return reinterpret_cast<cudaStream_t>(t.stream); }

// Makes the tensor's device current for the scope (the caller's current device is restored).
class DeviceGuard {
 public:
  explicit DeviceGuard(const TensorView& t) {
    check_cuda_call(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != t.device_index) check_cuda_call(cudaSetDevice(t.device_index), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

inline void check_on_device(const TensorView& t, const char* name, int device_index) {
  check_cuda(t, name);
  PIO_CHECK(t.device_index == device_index, name, " is on cuda:", t.device_index, " but the op runs on cuda:",
            device_index);
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Runs body with scalar_t bound to the CUDA storage type of a float tensor.
#define PIO_CUDA_DISPATCH_FLOAT(dtype, name, ...)                                          \
  [&] {                                                                                    \
    switch (dtype) {                                                                       \
      case ::pio::DType::Float32: { using scalar_t = float; return __VA_ARGS__(); }        \
      case ::pio::DType::Float16: { using scalar_t = __half; return __VA_ARGS__(); }       \
      case ::pio::DType::BFloat16: { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); } \
      default: ::pio::fail(name, ": unsupported dtype ", ::pio::dtype_name(dtype));       \
    }                                                                                      \
  }()

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch /* [32] shared */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch /* [32] shared */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace pio::cuda
