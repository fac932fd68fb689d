// Argument checks shared by the dense and the quantized linear kernels: bias [N] and out [M, N].
#pragma once
#include <optional>

#include "pio/checks.h"
#include "pio/tensor_view.h"

namespace pio::cpu {

inline void check_linear_bias_and_out(const std::optional<TensorView>& bias, const TensorView& out,
                                      const TensorView& x, int64_t M, int64_t N) {
  if (bias) {
    check_cpu(*bias, "bias");
    check_ndim(*bias, "bias", 1);
    check_same_dtype(*bias, "bias", x, "x");
    check_dim(*bias, "bias", 0, N);
    PIO_CHECK(N <= 1 || bias->stride(0) == 1, "bias must be contiguous, got stride ", bias->stride(0));
    check_not_null(*bias, "bias");
  }
  check_cpu(out, "out");
  check_ndim(out, "out", 2);
  check_same_dtype(out, "out", x, "x");
  check_dim(out, "out", 0, M);
  check_dim(out, "out", 1, N);
  check_last_dim_contiguous(out, "out");
  PIO_CHECK(M <= 1 || out.stride(0) >= N, "out: rows must not overlap, got strides (", out.stride(0), ", 1)");
  check_not_null(out, "out");
}

}  // namespace pio::cpu
