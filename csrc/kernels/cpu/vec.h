// A float32 SIMD vector for the instruction set this module is compiled for (AVX2: 8 lanes,
// AVX-512: 16 lanes), with loads/stores from float32/float16/bfloat16 and the math the
// kernels need. Kernels are written once against VecF; the build compiles them per ISA.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "float_types.h"

namespace pio::cpu {

#if defined(__AVX512F__)

struct VecF {
  static constexpr int N = 16;
  __m512 v;
  VecF() = default;
  VecF(__m512 x) : v(x) {}
  static VecF zero() { return _mm512_setzero_ps(); }
  static VecF broadcast(float x) { return _mm512_set1_ps(x); }
};
inline VecF operator+(VecF a, VecF b) { return _mm512_add_ps(a.v, b.v); }
inline VecF operator-(VecF a, VecF b) { return _mm512_sub_ps(a.v, b.v); }
inline VecF operator*(VecF a, VecF b) { return _mm512_mul_ps(a.v, b.v); }
inline VecF operator/(VecF a, VecF b) { return _mm512_div_ps(a.v, b.v); }
inline VecF fmadd(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }  // a*b+c
inline VecF vmax(VecF a, VecF b) { return _mm512_max_ps(a.v, b.v); }
inline VecF vmin(VecF a, VecF b) { return _mm512_min_ps(a.v, b.v); }
inline VecF vabs(VecF a) { return _mm512_abs_ps(a.v); }
inline float reduce_add(VecF a) { return _mm512_reduce_add_ps(a.v); }
inline float reduce_max(VecF a) { return _mm512_reduce_max_ps(a.v); }
inline VecF round_nearest(VecF a) { return _mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline VecF pow2i(VecF n) {  // 2^n for integral n in [-126, 127]
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
inline VecF select_lt(VecF a, VecF b, VecF if_true, VecF if_false) {  // a < b ? t : f
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ), if_false.v, if_true.v);
}

inline __mmask16 tail_mask(int n) { return __mmask16((1u << n) - 1u); }

inline VecF load(const float* p) { return _mm512_loadu_ps(p); }
inline VecF load(const Half* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline VecF bf16_bits_to_vec(__m256i x) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16)); }
inline VecF load(const BFloat16* p) { return bf16_bits_to_vec(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline VecF load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
inline VecF load_partial(const Half* p, int n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail_mask(n), p)); }
inline VecF load_partial(const BFloat16* p, int n) { return bf16_bits_to_vec(_mm256_maskz_loadu_epi16(tail_mask(n), p)); }

inline __m256i vec_to_bf16_bits(VecF a) {
#if defined(__AVX512BF16__)
  return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(a.v));
#else
  __m512i u = _mm512_castps_si512(a.v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  __mmask16 nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
  r = _mm512_mask_blend_epi32(nan, r, _mm512_set1_epi32(0x7fc0));
  return _mm512_cvtepi32_epi16(r);
#endif
}
inline __m256i vec_to_half_bits(VecF a) { return _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

inline void store(float* p, VecF a) { _mm512_storeu_ps(p, a.v); }
inline void store(Half* p, VecF a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), vec_to_half_bits(a)); }
inline void store(BFloat16* p, VecF a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), vec_to_bf16_bits(a)); }
inline void store_partial(float* p, VecF a, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), a.v); }
inline void store_partial(Half* p, VecF a, int n) { _mm256_mask_storeu_epi16(p, tail_mask(n), vec_to_half_bits(a)); }
inline void store_partial(BFloat16* p, VecF a, int n) { _mm256_mask_storeu_epi16(p, tail_mask(n), vec_to_bf16_bits(a)); }

#elif defined(__AVX2__)

struct VecF {
  static constexpr int N = 8;
  __m256 v;
  VecF() = default;
  VecF(__m256 x) : v(x) {}
  static VecF zero() { return _mm256_setzero_ps(); }
  static VecF broadcast(float x) { return _mm256_set1_ps(x); }
};
inline VecF operator+(VecF a, VecF b) { return _mm256_add_ps(a.v, b.v); }
inline VecF operator-(VecF a, VecF b) { return _mm256_sub_ps(a.v, b.v); }
inline VecF operator*(VecF a, VecF b) { return _mm256_mul_ps(a.v, b.v); }
inline VecF operator/(VecF a, VecF b) { return _mm256_div_ps(a.v, b.v); }
inline VecF fmadd(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
inline VecF vmax(VecF a, VecF b) { return _mm256_max_ps(a.v, b.v); }
inline VecF vmin(VecF a, VecF b) { return _mm256_min_ps(a.v, b.v); }
inline VecF vabs(VecF a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v); }
inline float reduce_add(VecF a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float reduce_max(VecF a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline VecF round_nearest(VecF a) { return _mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline VecF pow2i(VecF n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
inline VecF select_lt(VecF a, VecF b, VecF if_true, VecF if_false) {
  return _mm256_blendv_ps(if_false.v, if_true.v, _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ));
}

inline VecF load(const float* p) { return _mm256_loadu_ps(p); }
inline VecF load(const Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline VecF bf16_bits_to_vec(__m128i x) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16)); }
inline VecF load(const BFloat16* p) { return bf16_bits_to_vec(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
template <class T>
inline VecF load_partial(const T* p, int n) {  // tails only: a stack copy keeps reads in bounds
  T tmp[8];
  std::memset(tmp, 0, sizeof(tmp));
  std::memcpy(tmp, p, sizeof(T) * n);
  return load(tmp);
}

inline __m128i vec_to_bf16_bits(VecF a) {
  __m256i u = _mm256_castps_si256(a.v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  __m256 nan = _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), _mm256_castps_si256(nan));
  __m256i packed = _mm256_packus_epi32(r, r);  // per 128-bit lane: [r0..r3 r0..r3 | r4..r7 r4..r7]
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}
inline void store(float* p, VecF a) { _mm256_storeu_ps(p, a.v); }
inline void store(Half* p, VecF a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void store(BFloat16* p, VecF a) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), vec_to_bf16_bits(a)); }
template <class T>
inline void store_partial(T* p, VecF a, int n) {
  T tmp[8];
  store(tmp, a);
  std::memcpy(p, tmp, sizeof(T) * n);
}

#else
#error "inference-pio CPU kernels need AVX2 or AVX-512 (the build passes the ISA flags)"
#endif

// exp for float32 lanes (Cephes polynomial, ~1 ulp over the clamped range).
inline VecF vexp(VecF x) {
  x = vmin(vmax(x, VecF::broadcast(-87.33654f)), VecF::broadcast(88.72283f));
  VecF n = round_nearest(x * VecF::broadcast(1.44269504088896341f));
  VecF r = fmadd(n, VecF::broadcast(-0.693359375f), x);
  r = fmadd(n, VecF::broadcast(2.12194440e-4f), r);
  VecF p = VecF::broadcast(1.9875691500e-4f);
  p = fmadd(p, r, VecF::broadcast(1.3981999507e-3f));
  p = fmadd(p, r, VecF::broadcast(8.3334519073e-3f));
  p = fmadd(p, r, VecF::broadcast(4.1665795894e-2f));
  p = fmadd(p, r, VecF::broadcast(1.6666665459e-1f));
  p = fmadd(p, r, VecF::broadcast(5.0000001201e-1f));
  p = fmadd(p, r * r, r + VecF::broadcast(1.0f));
  return p * pow2i(n);
}

}  // namespace pio::cpu
