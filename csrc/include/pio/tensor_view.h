// A non-owning view of a tensor's memory: what the kernels receive instead of a torch::Tensor.
// Built on the Python side (inference_pio/ops/_tensor.py) so the extension never links libtorch.
#pragma once
#include <cstdint>
#include <string>

namespace pio {

// Codes shared with python/inference_pio/ops/_tensor.py.
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3, Int32 = 4, Int64 = 5, UInt8 = 6, Int8 = 7 };
enum class DeviceType : int { CPU = 0, CUDA = 1 };

constexpr int kMaxDims = 8;

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float64: return "float64";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt8: return "uint8";
    case DType::Int8: return "int8";
  }
  return "unknown";
}

inline int dtype_size(DType d) {
  switch (d) {
    case DType::Float32: case DType::Int32: return 4;
    case DType::Float16: case DType::BFloat16: return 2;
    case DType::Float64: case DType::Int64: return 8;
    case DType::UInt8: case DType::Int8: return 1;
  }
  return 0;
}

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements
  DeviceType device = DeviceType::CPU;
  int device_index = 0;
  std::uintptr_t stream = 0;  // CUDA stream handle for GPU work, 0 = default stream

  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
  int64_t stride(int d) const { return strides[d < 0 ? d + ndim : d]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
  std::string shape_str() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

}  // namespace pio
