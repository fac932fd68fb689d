// Quantized linear: out[m, n] = sum_k x[m, k] * dequant(weight)[n, k] (+ bias[n]),
// x [M, K] float32/float16/bfloat16 (row stride allowed), weight uint8 [N, K / 32 * block_bytes]
// GGUF blocks (quantized_blocks.h), out [M, N] in x's dtype.
//
// Decode is memory-bound: the weight must stream at copy bandwidth, so it is never expanded. Three
// ways to compute, chosen per call by input_mode (cpu_ops.h InputMode):
//
// int16 (the default; every type): each input row is quantized once per call to int16 blocks of
// 32 with a float scale, and each weight block meets it in integer dot products (vpdpwssd /
// vpmaddwd); quantized_int16.h states the layouts and the error bound (2^-16 of the block max).
// Q4_0 / Q4_1 instead run the int8 byte kernel below on the int16 values split into two bytes
// (QuantizedInput::split): the same integers, half the instructions of widening the nibbles.
//
// int8 (Q8_0 / Q4_0 / Q4_1 here; llama.cpp's scheme; the other types run the int16 kernel on
// int8-range inputs, the same rounding): each input row is quantized once per
// call to int8 blocks of 32 with a float scale (d = max|x| / 127, q = round(x / d)), then every
// weight block meets every input block in an integer dot product (AVX2 maddubs+madd, AVX-512BW
// the same on 64 bytes = 2 blocks, AVX512-VNNI vpdpbusd), scaled by d_w * d_x and accumulated in
// float32. 4-bit weights enter the dot as unsigned nibbles 0..15; the offset (-8 for Q4_0, the
// block min for Q4_1) is applied through the precomputed sum of the input block:
//   sum_i (q_i - 8) x_i = sum_i q_i x_i - 8 sum_i x_i,   sum_i (d q_i + m) x_i = d sum q_i x_i + m sum x_i.
// The only error beyond float32 rounding is the input quantization: |x - d q| <= d / 2 per element.
//
// exact (every type): weight blocks are dequantized in registers (d * q + m, one rounding) and
// multiplied with the input widened to float32: the float32 product with the dequantized weight,
// as a float reference computes it. Q5_0 / Q5_1 and the K-quants go through a per-thread row
// buffer (dequantized once per row and input chunk).
//
// Work is split over output rows (each thread streams its own slice of the weight). A weight
// block is unpacked once and used for up to kMR input rows; for large M (prefill) input rows and
// weight rows are blocked for L1 and L2 (see over_output). From kGemmMinRows rows the int16 and
// int8 modes run the register-tiled integer GEMM instead (quantized_gemm.h): batches and prompts
// are compute-bound.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "linear_checks.h"
#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"
#include "cpu_ops.h"
#include "quantized_blocks.h"
#include "quantized_gemm.h"
#include "quantized_int16.h"
#include "quantized_simd.h"
#include "vec.h"

namespace pio::cpu {
namespace {

constexpr int kBlock = kQBlock;      // elements per Q8_0 / Q4_0 / Q4_1 block and per input block
constexpr int kLanesPerBlock = 8;    // int32 lanes one 32-byte block dot product lands in
constexpr int kMR = 4;               // input rows per tile
constexpr int64_t kMinWeightBytesPerThread = 1 << 14;

// ---- Integer vectors: one block (AVX2, 32 bytes) or two blocks (AVX-512, 64 bytes). ----
#if defined(__AVX512F__)
using IVec = __m512i;
constexpr int kBlocksPerVec = 2;
inline IVec load_i(const void* p) { return _mm512_loadu_si512(p); }
inline VecF to_vecf(IVec a) { return _mm512_cvtepi32_ps(a); }
// sum over groups of 4 bytes of u8 * s8 -> int32 lanes (no saturation: |u| <= 128, |s| <= 127)
inline IVec dot_u8s8(IVec u, IVec s) {
#if defined(__AVX512VNNI__)
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
#endif
}
inline IVec abs_i8(IVec w) { return _mm512_abs_epi8(w); }
inline IVec shl8_add(IVec hi, IVec lo) { return _mm512_add_epi32(_mm512_slli_epi32(hi, 8), lo); }  // 256 hi + lo
inline IVec sign_like(IVec x, IVec w) {  // x * sign(w) (w = 0 is covered by |w| = 0)
  return _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
}
// Two blocks' 16 nibble bytes (at p0, p1) -> 64 unsigned bytes in element order.
inline IVec unpack_nibbles(const uint8_t* p0, const uint8_t* p1) {
  const __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0)));
  const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p1)));
  IVec raw = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
  raw = _mm512_mask_srli_epi16(raw, __mmask32(0xFF00FF00u), raw, 4);  // 2nd and 4th 16 bytes: high nibbles
  return _mm512_and_si512(raw, _mm512_set1_epi8(0x0F));
}
inline IVec load_two_32(const uint8_t* p0, const uint8_t* p1) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1));
  return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}
// fp16 scalars at p0 and p1 -> lanes 0..7 and 8..15.
inline VecF half_lanes(const uint8_t* p0, const uint8_t* p1) {
  uint16_t h0, h1;
  std::memcpy(&h0, p0, 2);
  std::memcpy(&h1, p1, 2);
  const __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(short(h0))), _mm_set1_epi16(short(h1)), 1);
  return _mm512_cvtph_ps(h);
}
#else
using IVec = __m256i;
constexpr int kBlocksPerVec = 1;
inline IVec load_i(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline VecF to_vecf(IVec a) { return _mm256_cvtepi32_ps(a); }
inline IVec dot_u8s8(IVec u, IVec s) { return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)); }
inline IVec abs_i8(IVec w) { return _mm256_abs_epi8(w); }
inline IVec shl8_add(IVec hi, IVec lo) { return _mm256_add_epi32(_mm256_slli_epi32(hi, 8), lo); }
inline IVec sign_like(IVec x, IVec w) { return _mm256_sign_epi8(x, w); }
inline IVec unpack_nibbles(const uint8_t* p0, const uint8_t*) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}
inline IVec load_two_32(const uint8_t* p0, const uint8_t*) { return load_i(p0); }
inline VecF half_lanes(const uint8_t* p0, const uint8_t*) { return VecF::broadcast(fp16_at(p0)); }
#endif

static_assert(VecF::N == kBlocksPerVec * kLanesPerBlock, "one float lane per int32 dot-product lane");

// ---- Input rows quantized to int8 blocks (the "Q8" side of every dot product). ----
// Per row, per block b: q[32 b .. 32 b + 31], and per int32 lane of that block the float
// scale d (dl) and d * sum(q) (sl), so the tile loop loads them as vectors. The block count is
// padded to whole vectors with zero blocks (d = 0), which contribute nothing.
// split: the int16 input mode on the byte kernel (Q4_0 / Q4_1): each int16 value q (|q| <= 32767)
// is kept as q = 256 hi + lo, hi = q >> 8 in q (signed), lo = q & 255 in lo (unsigned), and the
// block dot is 256 dot(nibbles, hi) + dot(lo, nibbles): two byte dots per 64 elements instead of
// widening the nibbles to int16, the same integers as the int16 kernel (quantized_int16.h).
struct QuantizedInput {
  int64_t blocks = 0;  // padded
  bool split = false;
  std::vector<int8_t> q;
  std::vector<uint8_t> lo;
  std::vector<float> dl, sl;
  const int8_t* q_row(int64_t m) const { return q.data() + m * blocks * kBlock; }
  const uint8_t* lo_row(int64_t m) const { return lo.data() + m * blocks * kBlock; }
  const float* d_row(int64_t m) const { return dl.data() + m * blocks * kLanesPerBlock; }
  const float* s_row(int64_t m) const { return sl.data() + m * blocks * kLanesPerBlock; }
  int8_t* q_row(int64_t m) { return q.data() + m * blocks * kBlock; }
  float* d_row(int64_t m) { return dl.data() + m * blocks * kLanesPerBlock; }
  float* s_row(int64_t m) { return sl.data() + m * blocks * kLanesPerBlock; }
};

template <class T>
void quantize_input_block(const T* x, int8_t* q, uint8_t* lo, float* dl, float* sl) {
  float d;
  int sum;
  if (lo) {
    int16_t q16[kBlock];
    sum = quantize_group(x, 32767.0f, q16, d);
    for (int i = 0; i < kBlock; ++i) {
      q[i] = int8_t(q16[i] >> 8);  // floor(q / 256): -128 .. 127
      lo[i] = uint8_t(q16[i] & 0xFF);
    }
  } else {
    sum = quantize_group(x, 127.0f, q, d);
  }
  for (int l = 0; l < kLanesPerBlock; ++l) {
    dl[l] = d;
    sl[l] = d * float(sum);
  }
}

template <class T>
void quantize_input(QuantizedInput& xq, const T* x, int64_t xs, int64_t M, int64_t K, bool split) {
  const int64_t nb = K / kBlock;
  xq.blocks = (nb + kBlocksPerVec - 1) / kBlocksPerVec * kBlocksPerVec;
  xq.split = split;
  xq.q.assign(size_t(M * xq.blocks * kBlock), 0);
  xq.lo.assign(split ? size_t(M * xq.blocks * kBlock) : 0, 0);
  xq.dl.assign(size_t(M * xq.blocks * kLanesPerBlock), 0.0f);
  xq.sl.assign(size_t(M * xq.blocks * kLanesPerBlock), 0.0f);
  parallel_for(M, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(K, 1)), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t b = 0; b < nb; ++b)
        quantize_input_block(x + m * xs + b * kBlock, xq.q_row(m) + b * kBlock,
                             split ? xq.lo.data() + (m * xq.blocks + b) * kBlock : nullptr,
                             xq.d_row(m) + b * kLanesPerBlock, xq.s_row(m) + b * kLanesPerBlock);
  });
}

// ---- One weight row against MR quantized input rows. ----
// What a weight step (kBlocksPerVec blocks) unpacks to: unsigned bytes (|w| for Q8_0), the raw
// signed bytes for Q8_0's sign trick, and per-lane scale d and min m.
struct WeightStep {
  IVec u, w;
  VecF d, m;
};


template <QType QT>
inline WeightStep load_step(const uint8_t* p0, const uint8_t* p1) {
  WeightStep s;
  s.d = half_lanes(p0, p1);
  if constexpr (QT == QType::Q8_0) {
    s.w = load_two_32(p0 + 2, p1 + 2);
    s.u = abs_i8(s.w);
  } else if constexpr (QT == QType::Q4_0) {
    s.u = unpack_nibbles(p0 + 2, p1 + 2);
  } else {
    s.m = half_lanes(p0 + 2, p1 + 2);
    s.u = unpack_nibbles(p0 + 4, p1 + 4);
  }
  return s;
}

// Per-lane correction weight: the final sum adds kCorrection * reduce(corr).
// Q4_0: -8 * d_w * d_x * sum q_x over a block = -(sum over its 8 lanes of d_w * (d_x sum q_x)).
// Q4_1: m_w * d_x * sum q_x = (1/8) * (sum over its 8 lanes of m_w * (d_x sum q_x)).
template <QType QT>
constexpr float correction() {
  return QT == QType::Q4_0 ? -8.0f / kLanesPerBlock : QT == QType::Q4_1 ? 1.0f / kLanesPerBlock : 0.0f;
}

template <QType QT, int MR, bool Split>
inline void accumulate_step(const WeightStep& s, const QuantizedInput& xq, int64_t m0, int64_t b, VecF* acc,
                            VecF* corr) {
  static_assert(!Split || QT != QType::Q8_0, "split inputs need unsigned weight bytes (nibbles)");
  for (int m = 0; m < MR; ++m) {
    const IVec xv = load_i(xq.q_row(m0 + m) + b * kBlock);
    IVec isum = QT == QType::Q8_0 ? dot_u8s8(s.u, sign_like(xv, s.w)) : dot_u8s8(s.u, xv);
    if constexpr (Split) isum = shl8_add(isum, dot_u8s8(load_i(xq.lo_row(m0 + m) + b * kBlock), s.u));
    const VecF xd = load(xq.d_row(m0 + m) + b * kLanesPerBlock);
    acc[m] = fmadd(to_vecf(isum), s.d * xd, acc[m]);
    if constexpr (QT != QType::Q8_0) {
      const VecF xsum = load(xq.s_row(m0 + m) + b * kLanesPerBlock);
      corr[m] = fmadd(QT == QType::Q4_1 ? s.m : s.d, xsum, corr[m]);
    }
  }
}

// res[m] = dot(dequant(weight row), x row m0 + m) for m < MR; nb: real (unpadded) blocks.
template <QType QT, int MR, bool Split>
void dot_tile(const uint8_t* w, int64_t nb, const QuantizedInput& xq, int64_t m0, float* res) {
  constexpr int B = block_bytes<QT>();
  VecF acc[MR], corr[MR];
  for (int m = 0; m < MR; ++m) acc[m] = corr[m] = VecF::zero();
  int64_t b = 0;
  for (; b + kBlocksPerVec <= nb; b += kBlocksPerVec) {
    const uint8_t* p = w + b * B;
    accumulate_step<QT, MR, Split>(load_step<QT>(p, p + B), xq, m0, b, acc, corr);
  }
  if (b < nb) {  // AVX-512, odd block count: the last block and a zero block (d = 0), never past the row
    alignas(64) uint8_t tail[2 * B] = {};
    std::memcpy(tail, w + b * B, B);
    accumulate_step<QT, MR, Split>(load_step<QT>(tail, tail + B), xq, m0, b, acc, corr);
  }
  for (int m = 0; m < MR; ++m) {
    res[m] = reduce_add(acc[m]);
    if constexpr (QT != QType::Q8_0) res[m] += correction<QT>() * reduce_add(corr[m]);
  }
}

template <class T>
inline float bias_at(const T* bias, int64_t n) { return bias ? to_float(bias[n]) : 0.0f; }

// ---- Exact path: weight blocks dequantized in registers, float32 products with float32 input. ----
// The input rows, widened to float32 once per call (M*K work against N*K for the weight).
template <class T>
const float* widen_input(const T* x, int64_t xs, int64_t M, int64_t K) {
  thread_local std::vector<float> buf;
  buf.resize(size_t(M * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) buf[m * K + k] = to_float(x[m * xs + k]);
  return buf.data();
}

constexpr int kChains = 2;  // independent accumulators per input row (FMA latency)

// res[m] = dot(dequant(weight row), float input row m0 + m) for m < MR.
template <QType QT, int MR>
void exact_tile(const uint8_t* w, int64_t K, const float* xf, int64_t m0, float* res) {
  constexpr int B = block_bytes<QT>();
  VecF acc[MR][kChains];
  for (int m = 0; m < MR; ++m)
    for (int c = 0; c < kChains; ++c) acc[m][c] = VecF::zero();
  const float* xr[MR];
  for (int m = 0; m < MR; ++m) xr[m] = xf + (m0 + m) * K;
  for (int64_t b = 0; b < K / kBlock; ++b) {
    VecF wf[kVecsPerBlock];
    block_values<QT>(w + b * B, wf);
    for (int m = 0; m < MR; ++m)
      for (int j = 0; j < kVecsPerBlock; ++j)
        acc[m][j % kChains] = fmadd(wf[j], load(xr[m] + b * kBlock + j * VecF::N), acc[m][j % kChains]);
  }
  for (int m = 0; m < MR; ++m) res[m] = reduce_add(acc[m][0] + acc[m][1]);
}

// Q5_0 / Q5_1 / K-quants: the weight row dequantized (scalar) into a per-thread buffer, reused while the
// same row meets further input tiles, then float dot products.
// `call` numbers the kernel calls: a row is never reused across calls (the weight may have changed).
template <int MR>
void dequantized_row_tile(QType qtype, const uint8_t* w, int64_t K, const float* xf, int64_t m0, float* res,
                          uint64_t call) {
  thread_local std::vector<float> row;
  thread_local const uint8_t* row_of = nullptr;
  thread_local uint64_t row_call = 0;
  if (row_of != w || row_call != call || int64_t(row.size()) != K) {
    row.resize(size_t(K));
    dequantize_row(qtype, w, row.data(), K);
    row_of = w;
    row_call = call;
  }
  constexpr int V = VecF::N;
  VecF acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = VecF::zero();
  for (int64_t k = 0; k < K; k += V) {  // K is a multiple of 256
    const VecF wv = load(row.data() + k);
    for (int m = 0; m < MR; ++m) acc[m] = fmadd(wv, load(xf + (m0 + m) * K + k), acc[m]);
  }
  for (int m = 0; m < MR; ++m) res[m] = reduce_add(acc[m]);
}

// ---- Driving the tiles over the output. ----
// A kernel: `template <int MR> void tile(const uint8_t* weight_row, int64_t m0, float* res) const`.
template <QType QT, bool Split>
struct Int8InputKernel {
  const QuantizedInput* xq;
  int64_t nb;
  template <int MR>
  void tile(const uint8_t* w, int64_t m0, float* res) const { dot_tile<QT, MR, Split>(w, nb, *xq, m0, res); }
};
template <QType QT>
struct Int16InputKernel {
  const Int16Input* xq;
  int64_t K;
  template <int MR>
  void tile(const uint8_t* w, int64_t m0, float* res) const { int16_tile<QT, MR>(w, K, *xq, m0, res); }
};
template <QType QT>
struct ExactKernel {
  const float* xf;
  int64_t K;
  template <int MR>
  void tile(const uint8_t* w, int64_t m0, float* res) const { exact_tile<QT, MR>(w, K, xf, m0, res); }
};
struct DequantizedRowKernel {
  QType qtype;
  const float* xf;
  int64_t K;
  uint64_t call;
  template <int MR>
  void tile(const uint8_t* w, int64_t m0, float* res) const {
    dequantized_row_tile<MR>(qtype, w, K, xf, m0, res, call);
  }
};
std::atomic<uint64_t> dequantized_row_calls{0};

// Rows [m0, m1) of the output for weight row n.
template <class Kernel, class T>
void rows_of_output_column(const Kernel& kernel, T* out, int64_t os, const uint8_t* w, const T* bias, int64_t n,
                           int64_t m0, int64_t m1) {
  float res[kMR];
  const float b = bias_at(bias, n);
  int64_t m = m0;
  for (; m + kMR <= m1; m += kMR) {
    kernel.template tile<kMR>(w, m, res);
    for (int i = 0; i < kMR; ++i) out[(m + i) * os + n] = from_float<T>(res[i] + b);
  }
  const int rest = int(m1 - m);
  switch (rest) {
    case 1: kernel.template tile<1>(w, m, res); break;
    case 2: kernel.template tile<2>(w, m, res); break;
    case 3: kernel.template tile<3>(w, m, res); break;
    default: break;
  }
  for (int i = 0; i < rest; ++i) out[(m + i) * os + n] = from_float<T>(res[i] + b);
}

// Cache blocking for many input rows (prefill). An L1-sized chunk of input rows meets a block of
// weight rows (kept in L2) before the next chunk comes, so each tile loads its input from L1 and
// each weight row is read from L2 once per chunk; decode (a few rows) is one chunk. Threads split
// the output rows n (each streams its own slice of the weight).
constexpr int64_t kInputL1Bytes = 24 << 10;
constexpr int64_t kInputL2Bytes = 512 << 10;
constexpr int64_t kWeightL2Bytes = 256 << 10;

// Rows of input that fit in `bytes`, a whole number of kMR-row tiles (at least one).
inline int64_t rows_within(int64_t bytes, int64_t row_bytes) {
  return std::max<int64_t>(kMR, bytes / std::max<int64_t>(1, row_bytes) / kMR * kMR);
}

template <class Kernel, class T>
void over_output(const Kernel& kernel, T* out, int64_t os, const uint8_t* weight, int64_t row_bytes, const T* bias,
                 int64_t M, int64_t N, int64_t input_row_bytes) {
  const int64_t l2_rows = rows_within(kInputL2Bytes, input_row_bytes);
  const int64_t l1_rows = rows_within(kInputL1Bytes, input_row_bytes);
  const int64_t weight_rows = std::max<int64_t>(1, kWeightL2Bytes / std::max<int64_t>(1, row_bytes));
  const int64_t min_rows = std::max<int64_t>(1, kMinWeightBytesPerThread / std::max<int64_t>(1, row_bytes));
  parallel_for(N, min_rows, [&](int64_t n0, int64_t n1) {
    for (int64_t m2 = 0; m2 < M; m2 += l2_rows) {
      const int64_t m2_end = std::min(M, m2 + l2_rows);
      for (int64_t nw = n0; nw < n1; nw += weight_rows) {
        const int64_t nw_end = std::min(n1, nw + weight_rows);
        for (int64_t m1 = m2; m1 < m2_end; m1 += l1_rows) {
          const int64_t m1_end = std::min(m2_end, m1 + l1_rows);
          for (int64_t n = nw; n < nw_end; ++n)
            rows_of_output_column(kernel, out, os, weight + n * row_bytes, bias, n, m1, m1_end);
        }
      }
    }
  });
}

QuantizedInput& input_scratch() {
  thread_local QuantizedInput buf;  // reused across calls: decode does not allocate every step
  return buf;
}

// Split: int16 inputs as two bytes (Q4_0 / Q4_1), else int8 inputs.
template <QType QT, bool Split, class T>
void linear_int8_input(T* out, int64_t os, const T* x, int64_t xs, const uint8_t* weight, int64_t row_bytes,
                       const T* bias, int64_t M, int64_t N, int64_t K) {
  QuantizedInput& xq = input_scratch();
  quantize_input(xq, x, xs, M, K, Split);
  const int64_t xrow = xq.blocks * ((Split ? 2 : 1) * kBlock + 2 * kLanesPerBlock * int64_t(sizeof(float)));
  over_output(Int8InputKernel<QT, Split>{&xq, K / kBlock}, out, os, weight, row_bytes, bias, M, N, xrow);
}

template <QType QT, class T>
void linear_int16_input(T* out, int64_t os, const T* x, int64_t xs, const uint8_t* weight, int64_t row_bytes,
                        const T* bias, int64_t M, int64_t N, int64_t K, float qmax) {
  thread_local Int16Input xq;  // reused across calls: decode does not allocate every step
  quantize_input_i16(xq, x, xs, M, K, qmax);
  const int64_t xrow = K * int64_t(sizeof(int16_t)) + K / kGroup * 2 * int64_t(sizeof(float));
  over_output(Int16InputKernel<QT>{&xq, K}, out, os, weight, row_bytes, bias, M, N, xrow);
}

template <QType QT, class T>
void linear_exact(T* out, int64_t os, const T* x, int64_t xs, const uint8_t* weight, int64_t row_bytes,
                  const T* bias, int64_t M, int64_t N, int64_t K) {
  const float* xf = widen_input(x, xs, M, K);
  const int64_t xrow = K * int64_t(sizeof(float));
  if constexpr (QT != QType::Q8_0 && QT != QType::Q4_0 && QT != QType::Q4_1)
    over_output(DequantizedRowKernel{QT, xf, K, ++dequantized_row_calls}, out, os, weight, row_bytes, bias, M, N,
                xrow);
  else
    over_output(ExactKernel<QT>{xf, K}, out, os, weight, row_bytes, bias, M, N, xrow);
}

// One type, one input mode.
template <QType QT, class T>
void linear_for_type(T* out, int64_t os, const T* x, int64_t xs, const uint8_t* w, int64_t rb, const T* bias, int64_t M,
                     int64_t N, int64_t K, int input_mode) {
  constexpr bool byte_kernel = QT == QType::Q8_0 || QT == QType::Q4_0 || QT == QType::Q4_1;
  if (input_mode == kInputExact) return linear_exact<QT>(out, os, x, xs, w, rb, bias, M, N, K);
  if (M >= kGemmMinRows)  // batches and prompts: compute-bound, the register-tiled GEMM (quantized_gemm.h)
    return quantized_gemm<QT>(out, os, x, xs, w, rb, bias, M, N, K, input_mode == kInputInt16 ? 32767.0f : 127.0f);
  if (input_mode == kInputInt16) {
    if constexpr (QT == QType::Q4_0 || QT == QType::Q4_1)  // nibble weights: the byte kernel on split inputs
      return linear_int8_input<QT, true>(out, os, x, xs, w, rb, bias, M, N, K);
    else
      return linear_int16_input<QT>(out, os, x, xs, w, rb, bias, M, N, K, 32767.0f);
  }
  if constexpr (byte_kernel) return linear_int8_input<QT, false>(out, os, x, xs, w, rb, bias, M, N, K);
  else return linear_int16_input<QT>(out, os, x, xs, w, rb, bias, M, N, K, 127.0f);
}

template <class T>
void quantized_linear_impl(QType qtype, const TensorView& out, const TensorView& x, const TensorView& weight,
                           const T* bias, int input_mode) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  T* op = out.ptr<T>();
  const T* xp = x.ptr<T>();
  const uint8_t* w = weight.ptr<uint8_t>();
  const int64_t os = out.stride(0), xs = x.stride(0), rb = weight.size(1);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) op[m * os + n] = from_float<T>(bias_at(bias, n));
    return;
  }
  switch (qtype) {
#define PIO_QTYPE_CASE(Q) \
  case QType::Q: return linear_for_type<QType::Q>(op, os, xp, xs, w, rb, bias, M, N, K, input_mode);
    PIO_QTYPE_CASE(Q8_0)
    PIO_QTYPE_CASE(Q4_0)
    PIO_QTYPE_CASE(Q4_1)
    PIO_QTYPE_CASE(Q5_0)
    PIO_QTYPE_CASE(Q5_1)
    PIO_QTYPE_CASE(Q4_K)
    PIO_QTYPE_CASE(Q5_K)
    PIO_QTYPE_CASE(Q6_K)
#undef PIO_QTYPE_CASE
  }
}

}  // namespace

// Public entry point (declared in cpu_ops.h, called by decoder_step.cpp too).
void quantized_linear(const TensorView& out, const TensorView& x, const TensorView& weight, int qtype,
                      const std::optional<TensorView>& bias, int input_mode) {
  const QTypeInfo info = qtype_info(qtype);
  PIO_CHECK(input_mode == kInputExact || input_mode == kInputInt8 || input_mode == kInputInt16,
            "input_mode must be 0 (exact), 1 (int8) or 2 (int16), got ", input_mode);
  check_cpu(x, "x");
  check_float(x, "x");
  check_ndim(x, "x", 2);
  check_last_dim_contiguous(x, "x");
  check_not_null(x, "x");
  const int64_t M = x.size(0), K = x.size(1);
  PIO_CHECK(M <= 1 || x.stride(0) >= K, "x: rows must not overlap, got strides (", x.stride(0), ", 1)");
  PIO_CHECK(K % info.block_elems == 0, "x.shape[1] (K = ", K, ") must be a multiple of the ", info.name,
            " block size ", info.block_elems);
  check_cpu(weight, "weight");
  check_ndim(weight, "weight", 2);
  check_dtype(weight, "weight", DType::UInt8);
  const int64_t N = weight.size(0), row_bytes = K / info.block_elems * info.block_bytes;
  PIO_CHECK(weight.size(1) == row_bytes, "weight must be uint8 [N, ", row_bytes, "] (", info.name, " blocks of K = ",
            K, "), got shape ", weight.shape_str());
  PIO_CHECK(row_bytes == 0 || ((row_bytes == 1 || weight.stride(1) == 1) && (N <= 1 || weight.stride(0) == row_bytes)),
            "weight must be contiguous, got strides (", weight.stride(0), ", ", weight.stride(1), ")");
  check_not_null(weight, "weight");
  check_linear_bias_and_out(bias, out, x, M, N);
  PIO_DISPATCH_FLOAT(x.dtype, "quantized_linear", [&] {
    quantized_linear_impl<scalar_t>(QType(qtype), out, x, weight, bias ? bias->ptr<scalar_t>() : nullptr,
                                    input_mode);
  });
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(quantized_linear) {
  namespace py = pybind11;
  m.def("quantized_linear", &pio::cpu::quantized_linear, py::arg("out"), py::arg("x"), py::arg("weight"),
        py::arg("qtype"), py::arg("bias"), py::arg("input_mode"), PIO_NOGIL,
        "out[m, n] = x[m, :] . dequant(weight)[n, :] (+ bias[n]); x: [M, K] float, weight: uint8 [N, row_bytes] "
        "GGUF blocks of ggml type qtype (Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7, Q8_0=8, Q4_K=12, Q5_K=13, Q6_K=14), "
        "out: [M, N] in x's dtype. input_mode: 0 exact float32 products; 1 x rounded to int8 blocks of 32 "
        "(llama.cpp's scheme, |error| <= max|x_block| / 254 per element); 2 x rounded to int16 blocks of 32 "
        "(|error| <= max|x_block| / 65534 per element); integer dot products in both");
  m.attr("quantized_vnni") =
#if defined(__AVX512VNNI__)
      true;
#else
      false;
#endif
}
