// Quantized embedding lookup: out[t, :] = dequant(weight)[ids[t], :], weight uint8
// [vocab, hidden / block_elems * block_bytes] GGUF blocks (quantized_blocks.h), ids [T] int32 or
// int64, out [T, hidden] float32/float16/bfloat16. Only the T looked-up rows are read. The
// prefill route of ops.quantized_linear uses it to dequantize tiles of weight rows.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"
#include "quantized_blocks.h"
#include "quantized_simd.h"
#include "vec.h"

namespace pio::cpu {
namespace {

constexpr int64_t kMinElemsPerThread = 1 << 15;

template <class T>
void store_row(T* dst, const float* src, int64_t n) {
  constexpr int V = VecF::N;
  int64_t i = 0;
  for (; i + V <= n; i += V) store(dst + i, load(src + i));
  if (i < n) store_partial(dst + i, load_partial(src + i, int(n - i)), int(n - i));
}

template <class T, class I>
void embedding_impl(QType qtype, const TensorView& out, const I* ids, const TensorView& weight, int64_t hidden) {
  const int64_t T_ = out.size(0), vocab = weight.size(0), rb = weight.size(1), os = out.stride(0);
  for (int64_t t = 0; t < T_; ++t)  // all ids checked before anything is written
    PIO_CHECK(ids[t] >= 0 && ids[t] < vocab, "ids[", t, "] = ", int64_t(ids[t]), " is out of range for a vocabulary of ",
              vocab);
  const uint8_t* w = weight.ptr<uint8_t>();
  T* op = out.ptr<T>();
  parallel_for(T_, std::max<int64_t>(1, kMinElemsPerThread / std::max<int64_t>(1, hidden)), [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> row;
    row.resize(size_t(hidden));
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* src = w + int64_t(ids[t]) * rb;
      T* dst = op + t * os;
      switch (qtype) {  // the 32-element types in SIMD, the K-quants through the scalar statement
        case QType::Q8_0: dequantize_row_simd<QType::Q8_0>(src, dst, hidden); break;
        case QType::Q4_0: dequantize_row_simd<QType::Q4_0>(src, dst, hidden); break;
        case QType::Q4_1: dequantize_row_simd<QType::Q4_1>(src, dst, hidden); break;
        default:
          if constexpr (std::is_same_v<T, float>) {
            dequantize_row(qtype, src, dst, hidden);
          } else {
            dequantize_row(qtype, src, row.data(), hidden);
            store_row(dst, row.data(), hidden);
          }
      }
    }
  });
}

}  // namespace

// Public entry point (declared in cpu_ops.h, called by decoder_step.cpp too).
void quantized_embedding(const TensorView& out, const TensorView& ids, const TensorView& weight, int qtype) {
  const QTypeInfo info = qtype_info(qtype);
  check_cpu(ids, "ids");
  check_ndim(ids, "ids", 1);
  PIO_CHECK(ids.dtype == DType::Int32 || ids.dtype == DType::Int64, "ids must be int32 or int64, got ",
            dtype_name(ids.dtype));
  PIO_CHECK(ids.size(0) <= 1 || ids.stride(0) == 1, "ids must be contiguous, got stride ", ids.stride(0));
  check_not_null(ids, "ids");
  check_cpu(out, "out");
  check_float(out, "out");
  check_ndim(out, "out", 2);
  check_dim(out, "out", 0, ids.size(0));
  check_last_dim_contiguous(out, "out");
  check_not_null(out, "out");
  const int64_t hidden = out.size(1);
  PIO_CHECK(hidden % info.block_elems == 0, "out.shape[1] (hidden = ", hidden, ") must be a multiple of the ",
            info.name, " block size ", info.block_elems);
  PIO_CHECK(ids.size(0) <= 1 || out.stride(0) >= hidden, "out: rows must not overlap, got strides (", out.stride(0),
            ", 1)");
  check_cpu(weight, "weight");
  check_ndim(weight, "weight", 2);
  check_dtype(weight, "weight", DType::UInt8);
  const int64_t row_bytes = hidden / info.block_elems * info.block_bytes;
  PIO_CHECK(weight.size(1) == row_bytes, "weight must be uint8 [vocab, ", row_bytes, "] (", info.name,
            " blocks of hidden = ", hidden, "), got shape ", weight.shape_str());
  PIO_CHECK(row_bytes == 0 || ((row_bytes == 1 || weight.stride(1) == 1) &&
                               (weight.size(0) <= 1 || weight.stride(0) == row_bytes)),
            "weight must be contiguous, got strides (", weight.stride(0), ", ", weight.stride(1), ")");
  check_not_null(weight, "weight");
  if (ids.size(0) == 0 || hidden == 0) return;
  PIO_DISPATCH_FLOAT(out.dtype, "quantized_embedding", [&] {
    if (ids.dtype == DType::Int32)
      embedding_impl<scalar_t>(QType(qtype), out, ids.ptr<int32_t>(), weight, hidden);
    else
      embedding_impl<scalar_t>(QType(qtype), out, ids.ptr<int64_t>(), weight, hidden);
  });
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(quantized_embedding) {
  namespace py = pybind11;
  m.def("quantized_embedding", &pio::cpu::quantized_embedding, py::arg("out"), py::arg("ids"), py::arg("weight"),
        py::arg("qtype"), PIO_NOGIL,
        "out[t, :] = dequant(weight)[ids[t], :]; ids: [T] int32/int64, weight: uint8 [vocab, row_bytes] GGUF blocks "
        "of ggml type qtype, out: [T, hidden] float32/float16/bfloat16");
}
