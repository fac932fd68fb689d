// Block-direct integer GEMM of quantized_linear for many input rows (batch decode, prompts), in
// the int16 and int8 input modes, for every type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
// Compiled per ISA module like the kernels that include it.
//
// Rounding: the input blocks of the row kernel (quantize_group: 32 values, one float scale d, int16
// or int8-range integers) and its weight groups (for_each_group: dequant = s * w + m), so the same
// integers and the bound of quantized_int16.h, unchanged:
//   |out - exact| <= sum_k |w[n, k]| * max|x_block(k)| / (2 qmax) * (1 + 2^-7)  + float32 rounding,
// qmax = 32767 (int16: 2^-16 of the block's max per element) or 127 (int8).
// Not bit-identical to the row kernel (M < kGemmMinRows): here a group's 32 products are summed
// in int32 and added by one float FMA per group in order; the row kernel adds per-lane partial
// sums in two chains. They differ by float32 rounding of the sums only.
//
// Layout (why): a vector's lanes are input rows, not weight rows. The input is quantized once per
// call into int16 pairs interleaved across kGL rows ([row vector][group][pair][lane], one int32
// each), so one vpdpwssd (AVX512-VNNI; vpmaddwd + add on AVX-512BW / AVX2) multiplies pair p of kGL
// rows by a broadcast weight pair and keeps summing in int32 across the group. The weight needs
// no transposition: kGemmNR weight rows are unpacked once per chunk of input rows into a small
// int16 panel (kGemmNR x K, L1/L2-resident) that every row tile of the chunk reuses. Register tile:
// kGemmMV row vectors x kGemmNR weight rows. Per group: 16 integer dots per (vector, weight row),
// one int -> float conversion and one FMA with s_w * d_x, plus m_w * (d_x sum q) for the types with
// a minimum. Threads split the output columns (panels of weight rows). No float copy of the weight.
//
// Int32 range: a lane sums 32 products |w q| <= 1953 * 32767 (Q5_K's largest w) < 2^31 / 32. Q6_K's
// w folds in its 16-element scales (|w| <= 4096) and is summed 16 products at a time (2^31 - 2^16).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "quantized_blocks.h"
#include "quantized_int16.h"
#include "vec.h"

namespace pio::cpu {

constexpr int kGL = VecF::N;           // input rows per vector (16 AVX-512, 8 AVX2)
constexpr int kPairs = kGroup / 2;     // int16 pairs (int32 lanes) per group
// Fewer rows: the row kernel (quantized_linear.cpp). Rows are padded to whole vectors, so on AVX-512
// 8 rows cost what 16 do; from 10 rows (AVX-512) or 8 (AVX2) the GEMM was faster (indicative).
constexpr int64_t kGemmMinRows = kGL == 16 ? 10 : 8;

#if defined(__AVX512F__)
using GemmI = __m512i;
constexpr int kGemmMV = 2, kGemmNR = 4;  // 8 int32 + 8 float accumulators of 32 registers
inline GemmI gemm_zero() { return _mm512_setzero_si512(); }
inline GemmI gemm_load(const int32_t* p) { return _mm512_loadu_si512(p); }
// acc + per lane x.lo * w.lo + x.hi * w.hi (int16 halves), w one broadcast pair.
inline GemmI gemm_dot(GemmI acc, GemmI x, int32_t w) {
#if defined(__AVX512VNNI__)
  return _mm512_dpwssd_epi32(acc, x, _mm512_set1_epi32(w));
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(x, _mm512_set1_epi32(w)));
#endif
}
inline VecF gemm_float(GemmI a) { return _mm512_cvtepi32_ps(a); }
inline void store_i16(int16_t* p, const I16& w) { _mm512_storeu_si512(p, w.v); }
#else
using GemmI = __m256i;
constexpr int kGemmMV = 2, kGemmNR = 2;  // 4 int32 + 4 float accumulators of 16 registers
inline GemmI gemm_zero() { return _mm256_setzero_si256(); }
inline GemmI gemm_load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline GemmI gemm_dot(GemmI acc, GemmI x, int32_t w) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(x, _mm256_set1_epi32(w)));
}
inline VecF gemm_float(GemmI a) { return _mm256_cvtepi32_ps(a); }
inline void store_i16(int16_t* p, const I16& w) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), w.lo);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 16), w.hi);
}
#endif

// ---- Input rows quantized once per call, interleaved across kGL rows. ----
struct GemmInput {
  int64_t groups = 0, vectors = 0;  // per row (K / 32); row vectors (M padded to kGL; padding rows are 0)
  std::vector<int32_t> q;           // [vector][group][pair][kGL]
  std::vector<float> d, s;          // [vector][group][kGL]: scale d and d * sum(q)
  const int32_t* q_at(int64_t v, int64_t g) const { return q.data() + (v * groups + g) * kPairs * kGL; }
  const float* d_at(int64_t v, int64_t g) const { return d.data() + (v * groups + g) * kGL; }
  const float* s_at(int64_t v, int64_t g) const { return s.data() + (v * groups + g) * kGL; }
};

template <class T>
void gemm_quantize_input(GemmInput& xq, const T* x, int64_t xs, int64_t M, int64_t K, float qmax) {
  const int64_t ng = K / kGroup;
  xq.groups = ng;
  xq.vectors = (M + kGL - 1) / kGL;
  xq.q.resize(size_t(xq.vectors * ng * kPairs * kGL));
  xq.d.resize(size_t(xq.vectors * ng * kGL));
  xq.s.resize(size_t(xq.vectors * ng * kGL));
  parallel_for(xq.vectors, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(kGL * K, 1)), [&](int64_t v0, int64_t v1) {
    alignas(64) int16_t q16[kGroup];
    for (int64_t v = v0; v < v1; ++v)
      for (int l = 0; l < kGL; ++l) {
        const int64_t m = v * kGL + l;
        for (int64_t g = 0; g < ng; ++g) {
          int32_t* dst = xq.q.data() + (v * ng + g) * kPairs * kGL + l;
          const int64_t at = (v * ng + g) * kGL + l;
          if (m < M) {
            float d;
            const int sum = quantize_group(x + m * xs + g * kGroup, qmax, q16, d);
            xq.d[at] = d;
            xq.s[at] = d * float(sum);  // as Int16Input: the same min term as the row kernel
            for (int p = 0; p < kPairs; ++p) std::memcpy(dst + p * kGL, q16 + 2 * p, 4);
          } else {
            xq.d[at] = xq.s[at] = 0.0f;
            for (int p = 0; p < kPairs; ++p) dst[p * kGL] = 0;
          }
        }
      }
  });
}

// ---- kGemmNR weight rows unpacked: w [group][row][32] int16, s and m [group][row]. ----
struct GemmPanel {
  std::vector<int16_t> w;
  std::vector<float> s, m;
};

// Rows [0, nr) of the panel from the weight rows at w0; rows nr.. of a partial panel are zero.
template <QType QT>
void unpack_panel(GemmPanel& panel, const uint8_t* w0, int64_t row_bytes, int nr, int64_t ng) {
  const QTypeInfo info = qtype_info(int(QT));
  constexpr int G = groups_per_block<QT>();
  panel.w.resize(size_t(ng * kGemmNR * kGroup));
  panel.s.resize(size_t(ng * kGemmNR));
  panel.m.resize(size_t(ng * kGemmNR));
  for (int r = 0; r < kGemmNR; ++r) {
    if (r >= nr) {
      for (int64_t g = 0; g < ng; ++g) {
        std::memset(panel.w.data() + (g * kGemmNR + r) * kGroup, 0, kGroup * sizeof(int16_t));
        panel.s[g * kGemmNR + r] = panel.m[g * kGemmNR + r] = 0.0f;
      }
      continue;
    }
    const uint8_t* row = w0 + r * row_bytes;
    for (int64_t b = 0; b < ng / G; ++b)
      for_each_group<QT>(row + b * info.block_bytes, [&](int g, const I16& wv, float s, float m) {
        const int64_t at = (b * G + g) * kGemmNR + r;
        store_i16(panel.w.data() + at * kGroup, wv);
        panel.s[at] = s;
        panel.m[at] = m;
      });
  }
}

// res[r][l] = dot(dequant(panel row r), x~ row (v0 * kGL + l)) for l < MV * kGL.
template <QType QT, int MV>
void gemm_tile(const GemmInput& xq, int64_t v0, const GemmPanel& panel, float* res) {
  constexpr int NR = kGemmNR;
  constexpr int kHalves = QT == QType::Q6_K ? 2 : 1;  // Q6_K: int32 sums of 16 products (see the header)
  constexpr int kHalfPairs = kPairs / kHalves;
  VecF acc[NR][MV];
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < MV; ++v) acc[r][v] = VecF::zero();
  for (int64_t g = 0; g < xq.groups; ++g) {
    const int32_t* x[MV];
    for (int v = 0; v < MV; ++v) x[v] = xq.q_at(v0 + v, g);
    const int32_t* w = reinterpret_cast<const int32_t*>(panel.w.data() + g * NR * kGroup);  // [row][pair]
    const float* s = panel.s.data() + g * NR;
    for (int h = 0; h < kHalves; ++h) {
      GemmI ia[NR][MV];
      for (int r = 0; r < NR; ++r)
        for (int v = 0; v < MV; ++v) ia[r][v] = gemm_zero();
      for (int p = h * kHalfPairs; p < (h + 1) * kHalfPairs; ++p) {
        GemmI xv[MV];
        for (int v = 0; v < MV; ++v) xv[v] = gemm_load(x[v] + p * kGL);
        for (int r = 0; r < NR; ++r) {
          const int32_t wp = w[r * kPairs + p];
          for (int v = 0; v < MV; ++v) ia[r][v] = gemm_dot(ia[r][v], xv[v], wp);
        }
      }
      for (int v = 0; v < MV; ++v) {
        const VecF dx = load(xq.d_at(v0 + v, g));
        for (int r = 0; r < NR; ++r) acc[r][v] = fmadd(gemm_float(ia[r][v]), dx * VecF::broadcast(s[r]), acc[r][v]);
      }
    }
    if constexpr (has_min<QT>()) {
      const float* m = panel.m.data() + g * NR;
      for (int v = 0; v < MV; ++v) {
        const VecF sx = load(xq.s_at(v0 + v, g));
        for (int r = 0; r < NR; ++r) acc[r][v] = fmadd(sx, VecF::broadcast(m[r]), acc[r][v]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < MV; ++v) store(res + (r * MV + v) * kGL, acc[r][v]);
}

// Input rows per chunk: the chunk's quantized rows (K * 2 bytes each) stay in L2 while every panel
// of the thread passes over them; the panel is unpacked once per chunk.
constexpr int64_t kGemmInputL2Bytes = 256 << 10;
constexpr int64_t kGemmMinPanelBytesPerThread = 1 << 14;

// out [M, N] (row stride os) = x~ [M, K] . dequant(weight)^T (+ bias), x~ = x rounded to blocks of qmax.
template <QType QT, class T>
void quantized_gemm(T* out, int64_t os, const T* x, int64_t xs, const uint8_t* weight, int64_t row_bytes,
                    const T* bias, int64_t M, int64_t N, int64_t K, float qmax) {
  thread_local GemmInput scratch;  // reused across calls
  const GemmInput& xq = scratch;   // the calling thread's, also inside the parallel region
  gemm_quantize_input(scratch, x, xs, M, K, qmax);
  const int64_t panels = (N + kGemmNR - 1) / kGemmNR;
  const int64_t chunk_vectors = std::max<int64_t>(
      kGemmMV, kGemmInputL2Bytes / (K * int64_t(sizeof(int16_t)) * kGL) / kGemmMV * kGemmMV);
  const int64_t min_panels = std::max<int64_t>(1, kGemmMinPanelBytesPerThread / std::max<int64_t>(1, kGemmNR * row_bytes));
  parallel_for(panels, min_panels, [&](int64_t p0, int64_t p1) {
    thread_local GemmPanel panel;
    alignas(64) float res[kGemmNR * kGemmMV * kGL];
    for (int64_t c0 = 0; c0 < xq.vectors; c0 += chunk_vectors) {
      const int64_t c1 = std::min(xq.vectors, c0 + chunk_vectors);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n0 = p * kGemmNR;
        const int nr = int(std::min<int64_t>(kGemmNR, N - n0));
        unpack_panel<QT>(panel, weight + n0 * row_bytes, row_bytes, nr, xq.groups);
        float b[kGemmNR];
        for (int r = 0; r < nr; ++r) b[r] = bias ? to_float(bias[n0 + r]) : 0.0f;
        for (int64_t v = c0; v < c1; v += kGemmMV) {
          const int mv = int(std::min<int64_t>(kGemmMV, c1 - v));
          if (mv == kGemmMV) gemm_tile<QT, kGemmMV>(xq, v, panel, res);
          else gemm_tile<QT, 1>(xq, v, panel, res);
          const int64_t rows = std::min<int64_t>(int64_t(mv) * kGL, M - v * kGL);
          for (int r = 0; r < nr; ++r)
            for (int64_t l = 0; l < rows; ++l)
              out[(v * kGL + l) * os + n0 + r] = from_float<T>(res[r * mv * kGL + l] + b[r]);
        }
      }
    }
  });
}

}  // namespace pio::cpu
