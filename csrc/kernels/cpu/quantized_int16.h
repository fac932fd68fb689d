// Integer dot products of GGUF weight blocks with int16 activation blocks (the "int16" input
// mode of quantized_linear, its default), for every type: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
// Q5_K, Q6_K. Compiled per ISA module like the kernels that include it.
//
// Input side: each activation row is cut into blocks of 32; block b gets a float scale
//   d = max|x_block| / qmax,  q_i = round_half_even(x_i * (qmax / max|x_block|)),  |q_i| <= qmax,
// stored as int16 with d and d * sum(q) (float32). qmax = 32767 ("int16") or 127 ("int8" for the
// types the byte kernel does not cover). The kernel then computes exactly (up to float32 rounding
// of the sums) the product of the dequantized weight with x~ = d * q. Error bound per element:
//   |x_i - x~_i| <= d / 2 * (1 + 2^-7) = max|x_block| / (2 qmax) * (1 + 2^-7)
// (half a quantization step; the 2^-7 covers the float32 roundings of qmax / max and x * that);
// for int16 that is 2^-16 of the block's max, below bf16's own rounding (2^-9 of the value). So
//   |out - exact| <= sum_k |w[n, k]| * d(block of k) / 2 * (1 + 2^-7)  + float32 rounding.
//
// Weight side: a weight block is unpacked to int16 groups of 32 values w (element order) with a
// float scale s and, for the types with a minimum, a float m, so that dequant = s * w + m:
//   Q8_0 w = q              Q4_0 w = nibble - 8       Q5_0 w = 5-bit - 16        (m = 0)
//   Q4_1 w = nibble, m      Q5_1 w = 5-bit, m
//   Q4_K / Q5_K per sub-block j of 32: w = sc_j * q (<= 63 * 31), s = d, m = -dmin * mn_j
//   Q6_K per 32 elements: w = sc * (q - 32) with the two 16-element scales (|w| <= 4096), s = d.
// Then per group and input row: one integer dot (AVX512-VNNI vpdpwssd, AVX-512BW / AVX2
// vpmaddwd), one int32 -> float conversion, one float FMA with s * d_x, and m * (d_x * sum q).
// No per-row float buffer: blocks are unpacked in registers.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "quantized_blocks.h"
#include "vec.h"

namespace pio::cpu {

constexpr int kGroup = 32;  // elements per input block and per weight group

// ---- 32 int16 values in registers. ----
#if defined(__AVX512F__)
struct I16 {
  __m512i v;
};
inline I16 widen_i8(__m256i b) { return {_mm512_cvtepi8_epi16(b)}; }
inline I16 mul_i16(I16 a, I16 b) { return {_mm512_mullo_epi16(a.v, b.v)}; }
inline I16 halves_i16(int a, int b) {  // elements 0..15 = a, 16..31 = b
  return {_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(short(a))), _mm256_set1_epi16(short(b)), 1)};
}
// Per int32 lane, the sum of two adjacent products; as floats (exact while |sum| < 2^24).
inline VecF dot_i16(I16 w, const int16_t* x) {
  const __m512i xv = _mm512_loadu_si512(x);
#if defined(__AVX512VNNI__)
  return _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(_mm512_setzero_si512(), w.v, xv));
#else
  return _mm512_cvtepi32_ps(_mm512_madd_epi16(w.v, xv));
#endif
}
// 32 bytes: 0x10 where bit i of `bits` is set, else 0.
inline __m256i bits_to_0x10(uint32_t bits) { return _mm256_maskz_set1_epi8(__mmask32(bits), 0x10); }
#else
struct I16 {
  __m256i lo, hi;
};
inline I16 widen_i8(__m256i b) {
  return {_mm256_cvtepi8_epi16(_mm256_castsi256_si128(b)), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b, 1))};
}
inline I16 mul_i16(I16 a, I16 b) { return {_mm256_mullo_epi16(a.lo, b.lo), _mm256_mullo_epi16(a.hi, b.hi)}; }
inline I16 halves_i16(int a, int b) { return {_mm256_set1_epi16(short(a)), _mm256_set1_epi16(short(b))}; }
// Per int32 lane, the sum of four products (|sum| <= 4 * 128 * 32767 < 2^24 for Q8_0: exact as floats).
inline VecF dot_i16(I16 w, const int16_t* x) {
  const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16));
  return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(w.lo, x0), _mm256_madd_epi16(w.hi, x1)));
}
inline __m256i bits_to_0x10(uint32_t bits) {
  // byte i <- byte i / 8 of bits, then test bit i % 8
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(bits)), _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}
#endif

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256i byte_mask(int v) { return _mm256_set1_epi8(char(v)); }
// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high nibbles (16..31).
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), byte_mask(0x0F));
}
// Bytes of v shifted right by `s` bits (each byte on its own), masked to `mask`.
inline __m256i byte_bits(__m256i v, int s, int mask) {
  return _mm256_and_si256(_mm256_srli_epi16(v, s), byte_mask(mask));
}

// ---- Weight blocks -> groups: fn(group, I16 w, float s, float m) with dequant = s * w + m. ----
template <QType QT>
constexpr bool has_min() {
  return QT == QType::Q4_1 || QT == QType::Q5_1 || QT == QType::Q4_K || QT == QType::Q5_K;
}
template <QType QT>
constexpr int groups_per_block() {
  return QT == QType::Q4_K || QT == QType::Q5_K || QT == QType::Q6_K ? 8 : 1;
}

template <QType QT, class Fn>
inline void for_each_group(const uint8_t* b, const Fn& fn) {
  if constexpr (QT == QType::Q8_0) {
    fn(0, widen_i8(load32(b + 2)), fp16_at(b), 0.0f);
  } else if constexpr (QT == QType::Q4_0) {
    fn(0, widen_i8(_mm256_sub_epi8(nibbles_32(b + 2), byte_mask(8))), fp16_at(b), 0.0f);
  } else if constexpr (QT == QType::Q4_1) {
    fn(0, widen_i8(nibbles_32(b + 4)), fp16_at(b), fp16_at(b + 2));
  } else if constexpr (QT == QType::Q5_0) {
    const __m256i q = _mm256_or_si256(nibbles_32(b + 6), bits_to_0x10(u32_at(b + 2)));
    fn(0, widen_i8(_mm256_sub_epi8(q, byte_mask(16))), fp16_at(b), 0.0f);
  } else if constexpr (QT == QType::Q5_1) {
    fn(0, widen_i8(_mm256_or_si256(nibbles_32(b + 8), bits_to_0x10(u32_at(b + 4)))), fp16_at(b), fp16_at(b + 2));
  } else if constexpr (QT == QType::Q4_K || QT == QType::Q5_K) {
    const float d = fp16_at(b), dmin = fp16_at(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qs = b + (QT == QType::Q5_K ? 48 : 16);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (QT == QType::Q5_K) qh = load32(b + 16);
    for (int c = 0; c < 4; ++c) {
      const __m256i raw = load32(qs + 32 * c);
      __m256i lo = _mm256_and_si256(raw, byte_mask(0x0F)), hi = byte_bits(raw, 4, 0x0F);
      if constexpr (QT == QType::Q5_K) {  // bit 2c of qh[l] tops sub-block 2c, bit 2c + 1 sub-block 2c + 1
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(byte_bits(qh, 2 * c, 1), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(byte_bits(qh, 2 * c + 1, 1), 4));
      }
      int sc0, m0, sc1, m1;
      q4_k_scale_min(scales, 2 * c, sc0, m0);
      q4_k_scale_min(scales, 2 * c + 1, sc1, m1);
      fn(2 * c, mul_i16(widen_i8(lo), halves_i16(sc0, sc0)), d, -dmin * float(m0));
      fn(2 * c + 1, mul_i16(widen_i8(hi), halves_i16(sc1, sc1)), d, -dmin * float(m1));
    }
  } else {  // Q6_K: two halves of 128 elements, each 64 bytes of ql and 32 of qh
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = fp16_at(b + 208);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load32(b + 64 * h), ql1 = load32(b + 64 * h + 32), qh = load32(b + 128 + 32 * h);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, byte_mask(0x0F)), _mm256_slli_epi16(byte_bits(qh, 0, 3), 4)),
          _mm256_or_si256(_mm256_and_si256(ql1, byte_mask(0x0F)), _mm256_slli_epi16(byte_bits(qh, 2, 3), 4)),
          _mm256_or_si256(byte_bits(ql0, 4, 0x0F), _mm256_slli_epi16(byte_bits(qh, 4, 3), 4)),
          _mm256_or_si256(byte_bits(ql1, 4, 0x0F), _mm256_slli_epi16(byte_bits(qh, 6, 3), 4))};
      for (int g = 0; g < 4; ++g) {
        const int s = 8 * h + 2 * g;  // the two 16-element scales of elements 128h + 32g ..
        fn(4 * h + g, mul_i16(widen_i8(_mm256_sub_epi8(q[g], byte_mask(32))), halves_i16(sc[s], sc[s + 1])), d, 0.0f);
      }
    }
  }
}

// ---- Activation rows quantized to int16 blocks. ----
struct Int16Input {
  int64_t groups = 0;       // per row (K / 32)
  std::vector<int16_t> q;   // [M, groups * 32]
  std::vector<float> d, s;  // [M, groups]: scale d, and d * sum(q)
  const int16_t* q_row(int64_t m) const { return q.data() + m * groups * kGroup; }
  const float* d_row(int64_t m) const { return d.data() + m * groups; }
  const float* s_row(int64_t m) const { return s.data() + m * groups; }
};

// One block of 32 inputs -> q_i = round_half_even(x_i * (qmax / max|x|)) (0 where x_i is not
// finite); returns sum(q) and sets d = max|x| / qmax, NaN when any x_i is NaN or infinite (so
// every output the block meets is NaN). Shared with the int8 byte kernel's input side.
template <class T, class Q>
int quantize_group(const T* x, float qmax, Q* q, float& d) {
  constexpr int V = VecF::N, NV = kGroup / V;
  VecF v[NV];
  VecF amax = VecF::zero(), poison = VecF::zero();
  for (int i = 0; i < NV; ++i) {
    v[i] = load(x + i * V);
    amax = vmax(amax, vabs(v[i]));
    poison = poison + v[i] * VecF::zero();  // NaN if any element is NaN or infinite
  }
  const float mx = reduce_max(amax);
  const VecF id = VecF::broadcast(mx > 0.0f ? qmax / mx : 0.0f);
  alignas(64) float r[kGroup];
  for (int i = 0; i < NV; ++i) store(r + i * V, round_nearest(v[i] * id));
  int sum = 0;
  for (int i = 0; i < kGroup; ++i) {
    const int qi = std::isfinite(r[i]) ? int(r[i]) : 0;
    q[i] = Q(qi);
    sum += qi;
  }
  d = std::isnan(reduce_add(poison)) ? NAN : mx / qmax;
  return sum;
}

template <class T>
void quantize_input_i16(Int16Input& xq, const T* x, int64_t xs, int64_t M, int64_t K, float qmax) {
  const int64_t ng = K / kGroup;
  xq.groups = ng;
  xq.q.resize(size_t(M * ng * kGroup));
  xq.d.resize(size_t(M * ng));
  xq.s.resize(size_t(M * ng));
  parallel_for(M, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(K, 1)), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t g = 0; g < ng; ++g) {
        float& d = xq.d[m * ng + g];
        const int sum = quantize_group(x + m * xs + g * kGroup, qmax, xq.q.data() + (m * ng + g) * kGroup, d);
        xq.s[m * ng + g] = d * float(sum);
      }
  });
}

// res[r] = dot(dequant(weight row w), x~ row m0 + r) for r < MR; K a multiple of the block.
template <QType QT, int MR>
void int16_tile(const uint8_t* w, int64_t K, const Int16Input& xq, int64_t m0, float* res) {
  const QTypeInfo info = qtype_info(int(QT));
  constexpr int G = groups_per_block<QT>();
  VecF acc[MR][2];
  float corr[MR][2];  // the min terms, in two chains as well (a scalar add's latency per group otherwise)
  const int16_t* xr[MR];
  const float *dr[MR], *sr[MR];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = acc[r][1] = VecF::zero();
    corr[r][0] = corr[r][1] = 0.0f;
    xr[r] = xq.q_row(m0 + r);
    dr[r] = xq.d_row(m0 + r);
    sr[r] = xq.s_row(m0 + r);
  }
  // Two accumulator chains per row (FMA latency): alternate blocks, or alternate groups of a K-quant block.
  const auto step = [&](int64_t b, int chain) {
    for_each_group<QT>(w + b * info.block_bytes, [&](int g, const I16& wv, float s, float m) {
      const int c = G == 1 ? chain : (g & 1);
      const int64_t xg = b * G + g;
      for (int r = 0; r < MR; ++r) {
        acc[r][c] = fmadd(dot_i16(wv, xr[r] + xg * kGroup), VecF::broadcast(s * dr[r][xg]), acc[r][c]);
        if constexpr (has_min<QT>()) corr[r][c] += m * sr[r][xg];
      }
    });
  };
  const int64_t nb = K / info.block_elems;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    step(b, 0);
    step(b + 1, 1);
  }
  if (b < nb) step(b, 0);
  for (int r = 0; r < MR; ++r) res[r] = reduce_add(acc[r][0] + acc[r][1]) + (corr[r][0] + corr[r][1]);
}

}  // namespace pio::cpu
