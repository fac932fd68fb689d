// The 32-element GGUF blocks (Q8_0, Q4_0, Q4_1) dequantized in SIMD registers: shared by the
// exact quantized linear (values straight into FMAs) and the embedding lookup (values stored).
// Compiled per ISA module like the kernels that include it (VecF is 8 or 16 lanes).
#pragma once
#include <immintrin.h>

#include "quantized_blocks.h"
#include "vec.h"

namespace pio::cpu {

constexpr int kQBlock = 32;  // elements of a Q8_0 / Q4_0 / Q4_1 block

// Bytes of one block of a 32-element type.
template <QType QT>
constexpr int block_bytes() {
  return QT == QType::Q8_0 ? 34 : QT == QType::Q4_0 ? 18 : 20;
}

constexpr int kVecsPerBlock = kQBlock / VecF::N;  // 2 (AVX-512) or 4 (AVX2)

// 16 int8 lanes -> 16 / VecF::N float vectors.
inline void int8x16_to_vecf(__m128i v, VecF* out) {
#if defined(__AVX512F__)
  out[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
#else
  out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
  out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
#endif
}

// One 32-element block at p -> its float values d * q (+ m), one fused rounding each.
template <QType QT>
inline void block_values(const uint8_t* p, VecF* wf) {
  __m128i lo, hi;
  if constexpr (QT == QType::Q8_0) {
    lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
    hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 18));
  } else {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (QT == QType::Q4_1 ? 4 : 2)));
    const __m128i nibble = _mm_set1_epi8(0x0F), offset = _mm_set1_epi8(QT == QType::Q4_0 ? 8 : 0);
    lo = _mm_sub_epi8(_mm_and_si128(t, nibble), offset);
    hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(t, 4), nibble), offset);
  }
  int8x16_to_vecf(lo, wf);
  int8x16_to_vecf(hi, wf + kVecsPerBlock / 2);
  const VecF d = VecF::broadcast(fp16_at(p));
  if constexpr (QT == QType::Q4_1) {
    const VecF mn = VecF::broadcast(fp16_at(p + 2));
    for (int j = 0; j < kVecsPerBlock; ++j) wf[j] = fmadd(wf[j], d, mn);
  } else {
    for (int j = 0; j < kVecsPerBlock; ++j) wf[j] = wf[j] * d;
  }
}

// A row of `cols` elements (a multiple of 32) of a 32-element type -> dst (float32/float16/bfloat16).
template <QType QT, class T>
void dequantize_row_simd(const uint8_t* row, T* dst, int64_t cols) {
  constexpr int B = block_bytes<QT>();
  for (int64_t b = 0; b < cols / kQBlock; ++b) {
    VecF wf[kVecsPerBlock];
    block_values<QT>(row + b * B, wf);
    for (int j = 0; j < kVecsPerBlock; ++j) store(dst + b * kQBlock + j * VecF::N, wf[j]);
  }
}

}  // namespace pio::cpu
