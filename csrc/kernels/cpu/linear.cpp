// Dense linear for few rows (decode): out[m, n] = sum_k x[m, k] * weight[n, k] (+ bias[n]),
// x [M, K] (row stride allowed, last dim contiguous), weight [N, K] contiguous, out [M, N].
//
// Decode (M = 1..16) is memory-bound: every weight element is used M times, so the kernel's job
// is to stream the weight once at close to copy bandwidth. Work is split over output rows n
// (contiguous chunks per thread, so each thread streams its own slice of the weight). A tile is
// NR weight rows x MR input rows: each weight vector is loaded once and multiplied into MR
// accumulators; with M > MR the tile's NR weight rows are reread from L1/L2, not from memory.
// Accumulation is float32 and each output is rounded once.
//
// The kernel is correct for any M; the Python op sends large M (prefill) to torch's matmul,
// which blocks for cache reuse across many rows (see python/inference_pio/ops/linear.py).
#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "linear_checks.h"
#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"
#include "vec.h"

namespace pio::cpu {
namespace {

// Fewer weight elements than this per thread: waking the second thread costs more than it saves.
constexpr int64_t kMinWeightElemsPerThread = 1 << 15;

// Input rows per tile. AVX2 has 16 vector registers: NR*MR accumulators + MR inputs + 1 weight
// must fit, so it takes 2 rows at a time; AVX-512 (32 registers) takes 4.
constexpr int kMaxMR = VecF::N == 16 ? 4 : 2;

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

template <class T>
inline float bias_at(const T* bias, int64_t n) { return bias ? to_float(bias[n]) : 0.0f; }

// ---- Generic path: float32 input rows (widened once per call), weight widened per vector. ----

// out[m0+m, n0+n] for n < NR, m < MR. xf: float32 input rows, stride xs, zero padded to a
// multiple of VecF::N so only the weight needs a partial tail load.
template <class T, int NR, int MR>
void tile_f32(T* out, int64_t os, const float* xf, int64_t xs, const T* w, int64_t K, const T* bias, int64_t n0,
              int64_t m0) {
  constexpr int V = VecF::N;
  VecF acc[NR][MR];
  for (int n = 0; n < NR; ++n)
    for (int m = 0; m < MR; ++m) acc[n][m] = VecF::zero();
  const T* wr[NR];
  for (int n = 0; n < NR; ++n) wr[n] = w + (n0 + n) * K;
  const float* xr[MR];
  for (int m = 0; m < MR; ++m) xr[m] = xf + (m0 + m) * xs;
  int64_t k = 0;
  for (; k + V <= K; k += V) {
    VecF xv[MR];
    for (int m = 0; m < MR; ++m) xv[m] = load(xr[m] + k);
    for (int n = 0; n < NR; ++n) {
      const VecF wv = load(wr[n] + k);
      for (int m = 0; m < MR; ++m) acc[n][m] = fmadd(xv[m], wv, acc[n][m]);
    }
  }
  if (k < K) {
    const int t = int(K - k);
    VecF xv[MR];
    for (int m = 0; m < MR; ++m) xv[m] = load(xr[m] + k);  // padded with zeros past K
    for (int n = 0; n < NR; ++n) {
      const VecF wv = load_partial(wr[n] + k, t);
      for (int m = 0; m < MR; ++m) acc[n][m] = fmadd(xv[m], wv, acc[n][m]);
    }
  }
  for (int n = 0; n < NR; ++n) {
    const float b = bias_at(bias, n0 + n);
    for (int m = 0; m < MR; ++m) out[(m0 + m) * os + n0 + n] = from_float<T>(reduce_add(acc[n][m]) + b);
  }
}

template <class T, int NR>
void tile_f32_rows(T* out, int64_t os, const float* xf, int64_t xs, const T* w, int64_t K, const T* bias, int64_t n0,
                   int64_t M) {
  int64_t m0 = 0;
  for (; m0 + kMaxMR <= M; m0 += kMaxMR) tile_f32<T, NR, kMaxMR>(out, os, xf, xs, w, K, bias, n0, m0);
  switch (M - m0) {
    case 1: tile_f32<T, NR, 1>(out, os, xf, xs, w, K, bias, n0, m0); break;
    case 2: if constexpr (kMaxMR > 2) tile_f32<T, NR, 2>(out, os, xf, xs, w, K, bias, n0, m0); break;
    case 3: if constexpr (kMaxMR > 3) tile_f32<T, NR, 3>(out, os, xf, xs, w, K, bias, n0, m0); break;
    default: break;
  }
}

#if defined(__AVX512BF16__)
// ---- bfloat16 with AVX512-BF16: VDPBF16PS multiplies bf16 pairs exactly and adds them into ----
// float32 lanes, so neither the weight nor the input is widened (32 elements per instruction).
template <int NR, int MR>
void tile_bf16(BFloat16* out, int64_t os, const BFloat16* xb, int64_t xs, const BFloat16* w, int64_t K,
               const BFloat16* bias, int64_t n0, int64_t m0) {
  __m512 acc[NR][MR];
  for (int n = 0; n < NR; ++n)
    for (int m = 0; m < MR; ++m) acc[n][m] = _mm512_setzero_ps();
  const BFloat16* wr[NR];
  for (int n = 0; n < NR; ++n) wr[n] = w + (n0 + n) * K;
  const BFloat16* xr[MR];
  for (int m = 0; m < MR; ++m) xr[m] = xb + (m0 + m) * xs;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512bh xv[MR];
    for (int m = 0; m < MR; ++m) xv[m] = (__m512bh)_mm512_loadu_si512(xr[m] + k);
    for (int n = 0; n < NR; ++n) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(wr[n] + k);
      for (int m = 0; m < MR; ++m) acc[n][m] = _mm512_dpbf16_ps(acc[n][m], xv[m], wv);
    }
  }
  if (k < K) {
    const __mmask32 mask = __mmask32((1ull << (K - k)) - 1);  // the weight row ends at K: no read past it
    __m512bh xv[MR];
    for (int m = 0; m < MR; ++m) xv[m] = (__m512bh)_mm512_loadu_si512(xr[m] + k);  // zero padded
    for (int n = 0; n < NR; ++n) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mask, wr[n] + k);
      for (int m = 0; m < MR; ++m) acc[n][m] = _mm512_dpbf16_ps(acc[n][m], xv[m], wv);
    }
  }
  for (int n = 0; n < NR; ++n) {
    const float b = bias_at(bias, n0 + n);
    for (int m = 0; m < MR; ++m)
      out[(m0 + m) * os + n0 + n] = from_float<BFloat16>(_mm512_reduce_add_ps(acc[n][m]) + b);
  }
}

template <int NR>
void tile_bf16_rows(BFloat16* out, int64_t os, const BFloat16* xb, int64_t xs, const BFloat16* w, int64_t K,
                    const BFloat16* bias, int64_t n0, int64_t M) {
  int64_t m0 = 0;
  for (; m0 + 4 <= M; m0 += 4) tile_bf16<NR, 4>(out, os, xb, xs, w, K, bias, n0, m0);
  switch (M - m0) {
    case 1: tile_bf16<NR, 1>(out, os, xb, xs, w, K, bias, n0, m0); break;
    case 2: tile_bf16<NR, 2>(out, os, xb, xs, w, K, bias, n0, m0); break;
    case 3: tile_bf16<NR, 3>(out, os, xb, xs, w, K, bias, n0, m0); break;
    default: break;
  }
}
#endif

// Splits the N output rows into contiguous per-thread ranges of whole NR-row tiles and calls
// rows_fn<NR or 1>(n0) for each tile; rows past the last full tile go one at a time.
template <int NR, class TileFn, class RowFn>
void over_output_rows(int64_t N, int64_t K, const TileFn& tile, const RowFn& row) {
  const int64_t blocks = (N + NR - 1) / NR;
  const int64_t min_blocks = std::max<int64_t>(1, kMinWeightElemsPerThread / std::max<int64_t>(1, NR * K));
  parallel_for(blocks, min_blocks, [&](int64_t b, int64_t e) {
    const int64_t r1 = std::min(N, e * NR);
    int64_t n0 = b * NR;
    for (; n0 + NR <= r1; n0 += NR) tile(n0);
    for (; n0 < r1; ++n0) row(n0);
  });
}

// Input rows in a per-thread scratch buffer (the kernel runs without the GIL, so Python threads
// may call it concurrently), reused across calls so decode does not allocate every step.
template <class U>
std::vector<U>& scratch() {
  thread_local std::vector<U> buf;
  return buf;
}

template <class T>
void linear_impl(const TensorView& out, const TensorView& x, const TensorView& weight, const T* bias) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const int64_t xs = x.stride(0), os = out.stride(0);
  const T* xp = x.ptr<T>();
  const T* w = weight.ptr<T>();
  T* op = out.ptr<T>();
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: out = bias (or 0)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) op[m * os + n] = from_float<T>(bias_at(bias, n));
    return;
  }
  // One weight row per tile for M = 1 leaves too few independent accumulators to hide the FMA
  // latency, so decode takes 8 weight rows per tile; with more input rows 4 suffice.
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, BFloat16>) {
    // Input rows copied once, zero padded to whole 32-element pairs so x loads never go past K.
    const int64_t Kp = round_up(K, 32);
    auto& buf = scratch<BFloat16>();
    buf.resize(size_t(M * Kp));
    for (int64_t m = 0; m < M; ++m) {
      std::memcpy(buf.data() + m * Kp, xp + m * xs, sizeof(BFloat16) * K);
      std::memset(static_cast<void*>(buf.data() + m * Kp + K), 0, sizeof(BFloat16) * (Kp - K));
    }
    const BFloat16* xb = buf.data();
    if (M == 1)
      over_output_rows<8>(N, K, [&](int64_t n0) { tile_bf16<8, 1>(op, os, xb, Kp, w, K, bias, n0, 0); },
                          [&](int64_t n0) { tile_bf16<1, 1>(op, os, xb, Kp, w, K, bias, n0, 0); });
    else
      over_output_rows<4>(N, K, [&](int64_t n0) { tile_bf16_rows<4>(op, os, xb, Kp, w, K, bias, n0, M); },
                          [&](int64_t n0) { tile_bf16_rows<1>(op, os, xb, Kp, w, K, bias, n0, M); });
    return;
  }
#endif
  // Input rows widened to float32 once (M*K work against N*K for the weight), zero padded to
  // whole vectors.
  constexpr int V = VecF::N;
  const int64_t Kp = round_up(K, V);
  auto& buf = scratch<float>();
  buf.resize(size_t(M * Kp));
  for (int64_t m = 0; m < M; ++m) {
    const T* src = xp + m * xs;
    float* dst = buf.data() + m * Kp;
    int64_t k = 0;
    for (; k + V <= K; k += V) store(dst + k, load(src + k));
    if (k < K) store(dst + k, load_partial(src + k, int(K - k)));  // lanes past K load as zero
  }
  const float* xf = buf.data();
  if (M == 1)
    over_output_rows<8>(N, K, [&](int64_t n0) { tile_f32<T, 8, 1>(op, os, xf, Kp, w, K, bias, n0, 0); },
                        [&](int64_t n0) { tile_f32<T, 1, 1>(op, os, xf, Kp, w, K, bias, n0, 0); });
  else
    over_output_rows<4>(N, K, [&](int64_t n0) { tile_f32_rows<T, 4>(op, os, xf, Kp, w, K, bias, n0, M); },
                        [&](int64_t n0) { tile_f32_rows<T, 1>(op, os, xf, Kp, w, K, bias, n0, M); });
}

}  // namespace

// Public entry points (declared in cpu_ops.h, called by the fused decode step in csrc/decoder too).
void linear(const TensorView& out, const TensorView& x, const TensorView& weight, const std::optional<TensorView>& bias) {
  check_cpu(x, "x");
  check_float(x, "x");
  check_ndim(x, "x", 2);
  check_last_dim_contiguous(x, "x");
  check_not_null(x, "x");
  const int64_t M = x.size(0), K = x.size(1);
  PIO_CHECK(M <= 1 || x.stride(0) >= K, "x: rows must not overlap, got strides (", x.stride(0), ", 1)");
  check_cpu(weight, "weight");
  check_ndim(weight, "weight", 2);
  check_same_dtype(weight, "weight", x, "x");
  check_dim(weight, "weight", 1, K);
  const int64_t N = weight.size(0);
  // Spelled out rather than is_contiguous(): torch calls an empty [N, 0] weight contiguous
  // whatever its strides, and nothing is read from it then.
  PIO_CHECK(K == 0 || ((K == 1 || weight.stride(1) == 1) && (N <= 1 || weight.stride(0) == K)),
            "weight must be contiguous [N, K], got strides (", weight.stride(0), ", ", weight.stride(1), ")");
  check_not_null(weight, "weight");
  check_linear_bias_and_out(bias, out, x, M, N);
  PIO_DISPATCH_FLOAT(x.dtype, "linear", [&] {
    linear_impl<scalar_t>(out, x, weight, bias ? bias->ptr<scalar_t>() : nullptr);
  });
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(linear) {
  namespace py = pybind11;
  m.def("linear", &pio::cpu::linear, py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("bias"), PIO_NOGIL,
        "out[m, n] = x[m, :] . weight[n, :] (+ bias[n]); x: [M, K], weight: [N, K] contiguous, bias: [N] or None");
}
