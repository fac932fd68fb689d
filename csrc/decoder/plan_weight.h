// A projection weight of the fused decode step: output rows in one part or several (dense or GGUF
// blocks, each with an optional bias), shared out over a thread team by rows. Used by
// decoder_plan.cpp only; the kernels it calls are the ops of csrc/kernels/cpu (cpu_ops.h).
#pragma once
#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/quantized_blocks.h"
#include "pio/checks.h"
#include "pio/tensor_view.h"

namespace pio::cpu::decoder {

inline TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                     std::initializer_list<int64_t> strides) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.ndim = int(shape.size());
  int i = 0;
  for (int64_t s : shape) v.shape[i++] = s;
  i = 0;
  for (int64_t s : strides) v.strides[i++] = s;
  return v;
}

inline TensorView rows_view(void* data, DType dtype, int64_t rows, int64_t cols) {
  return make_view(data, dtype, {rows, cols}, {cols, 1});
}

// A slice of a projection's output rows: dense [rows, K] in the activation dtype, or GGUF blocks
// (uint8 [rows, K / block_elems * block_bytes], quantized_blocks.h), with an optional bias [rows].
struct WeightPart {
  TensorView weight;
  std::optional<TensorView> bias;
  int qtype = -1;  // ggml type id; -1: dense
  int input_mode = kInputExact;  // InputMode (cpu_ops.h) of a quantized part
  int64_t rows = 0, cols = 0;

  void check(const std::string& name, DType dtype) const {
    const char* n = name.c_str();
    check_cpu(weight, n);
    check_not_null(weight, n);
    check_ndim(weight, n, 2);
    check_contiguous(weight, n);
    if (qtype < 0) {
      PIO_CHECK(weight.dtype == dtype, name, " must be ", dtype_name(dtype), " (the activation dtype), got ",
                dtype_name(weight.dtype));
    } else {
      const QTypeInfo info = qtype_info(qtype);
      PIO_CHECK(quantized_kernels_callable(), name, ": this build's quantized kernels are not callable from C++");
      check_dtype(weight, n, DType::UInt8);
      PIO_CHECK(cols % info.block_elems == 0, name, ": ", cols, " columns are not a multiple of the ", info.name,
                " block size ", info.block_elems);
      const int64_t row_bytes = cols / info.block_elems * info.block_bytes;
      PIO_CHECK(weight.size(1) == row_bytes, name, " must be uint8 [", rows, ", ", row_bytes, "] (", info.name,
                " blocks of ", cols, " columns), got ", weight.shape_str());
    }
    if (bias) {
      const std::string bn = name + ".bias";
      check_cpu(*bias, bn.c_str());
      check_not_null(*bias, bn.c_str());
      PIO_CHECK(bias->ndim == 1 && bias->size(0) == rows, bn, " must have shape [", rows, "], got ", bias->shape_str());
      PIO_CHECK(bias->dtype == dtype, bn, " must be ", dtype_name(dtype), ", got ", dtype_name(bias->dtype));
      check_contiguous(*bias, bn.c_str());
    }
  }

  void apply(const TensorView& out, const TensorView& x) const {
    if (qtype < 0) linear(out, x, weight, bias);
    else quantized_linear(out, x, weight, qtype, bias, input_mode);
  }

  // Bytes of weight one output row streams (what a thread's share of the rows is measured in).
  int64_t row_cost() const { return weight.size(1) * dtype_size(weight.dtype); }

  // Output rows [r0, r1) of this part: the same blocks and settings over fewer rows.
  WeightPart rows_slice(int64_t r0, int64_t r1) const {
    WeightPart p = *this;
    p.weight.data = static_cast<char*>(weight.data) + r0 * weight.stride(0) * dtype_size(weight.dtype);
    p.weight.shape[0] = r1 - r0;
    if (bias) {
      p.bias->data = static_cast<char*>(bias->data) + r0 * bias->stride(0) * dtype_size(bias->dtype);
      p.bias->shape[0] = r1 - r0;
    }
    p.rows = r1 - r0;
    return p;
  }
};

// Output rows of a projection are shared out in multiples of this: whole 64-byte lines of a
// float32 output row, and whole tiles of the dense kernels (so the split changes no rounding).
constexpr int64_t kRowAlign = 16;

// A projection [N, K] whose output rows are one part or several concatenated (a fused qkv whose
// q/k/v blocks have different GGUF types, say). Each part writes its own columns of out.
struct PlanWeight {
  std::vector<WeightPart> parts;

  int64_t rows() const {
    int64_t n = 0;
    for (const WeightPart& p : parts) n += p.rows;
    return n;
  }
  int64_t cols() const { return parts.empty() ? 0 : parts[0].cols; }

  static PlanWeight dense(const TensorView& weight, const std::optional<TensorView>& bias) {
    PIO_CHECK(weight.ndim == 2, "weight must be 2-D [N, K], got shape ", weight.shape_str());
    return PlanWeight{{WeightPart{weight, bias, -1, kInputExact, weight.size(0), weight.size(1)}}};
  }
  static PlanWeight quantized(const TensorView& blocks, int qtype, int64_t cols, const std::optional<TensorView>& bias,
                              int input_mode) {
    PIO_CHECK(blocks.ndim == 2, "blocks must be 2-D uint8 [N, row_bytes], got shape ", blocks.shape_str());
    qtype_info(qtype);  // an unknown type fails here, by name
    return PlanWeight{{WeightPart{blocks, bias, qtype, input_mode, blocks.size(0), cols}}};
  }
  static PlanWeight concat(const std::vector<PlanWeight>& pieces) {
    PlanWeight w;
    for (const PlanWeight& p : pieces) w.parts.insert(w.parts.end(), p.parts.begin(), p.parts.end());
    PIO_CHECK(!w.parts.empty(), "concat needs at least one weight");
    return w;
  }

  // Checked once at plan construction so the step itself cannot fail on a weight.
  void check(const char* name, DType dtype, int64_t n, int64_t k) const {
    PIO_CHECK(!parts.empty(), name, " has no weight");
    PIO_CHECK(rows() == n && cols() == k, name, " must have shape [", n, ", ", k, "], got [", rows(), ", ", cols(), "]");
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string pn = parts.size() == 1 ? std::string(name) : std::string(name) + ".parts[" + std::to_string(i) + "]";
      PIO_CHECK(parts[i].cols == k, pn, " must have ", k, " columns, got ", parts[i].cols);
      parts[i].check(pn, dtype);
    }
  }

  // Member `rank` of a team of `threads`: its share of the output rows [0, rows()), computed from x
  // into out's matching columns. Shares are equal in weight bytes (parts may differ in type) and
  // start at multiples of kRowAlign.
  void apply_share(const TensorView& out, const TensorView& x, int rank, int threads) const {
    const int64_t r0 = share_start(rank, threads), r1 = share_start(rank + 1, threads);
    const int64_t es = dtype_size(out.dtype);
    int64_t n0 = 0;
    for (const WeightPart& p : parts) {
      const int64_t b = std::max(r0, n0), e = std::min(r1, n0 + p.rows);
      if (b < e) {
        TensorView slice = out;  // columns [b, e) of every row
        slice.data = static_cast<char*>(out.data) + b * es;
        slice.shape[1] = e - b;
        if (b == n0 && e == n0 + p.rows) p.apply(slice, x);
        else p.rows_slice(b - n0, e - n0).apply(slice, x);
      }
      n0 += p.rows;
    }
  }

 private:
  // The first output row of share `rank` (of `threads`); share `threads` starts at rows().
  int64_t share_start(int rank, int threads) const {
    const int64_t n = rows();
    if (rank <= 0) return 0;
    if (rank >= threads) return n;
    double total = 0;
    for (const WeightPart& p : parts) total += double(p.rows) * double(p.row_cost());
    const double target = total * rank / threads;  // weight bytes before the share
    double before = 0;
    int64_t row = 0;
    for (const WeightPart& p : parts) {
      const double cost = double(p.rows) * double(p.row_cost());
      if (before + cost >= target) {
        row += p.row_cost() > 0 ? int64_t((target - before) / double(p.row_cost())) : 0;
        break;
      }
      before += cost;
      row += p.rows;
    }
    return std::min(n, (row + kRowAlign / 2) / kRowAlign * kRowAlign);
  }
};

}  // namespace pio::cpu::decoder
