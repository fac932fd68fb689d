// SIMD building blocks shared by the CPU attention kernels: query rows held in float32, key
// and value rows of any storage dtype (float32/float16/bfloat16) reached through row pointers
// (so paged and contiguous caches look the same to them), float32 accumulation.
//
//   dot_rows:        scores[g][k] = q[g] . key_rows[k]           ([G, D] x [D, K])
//   accumulate_rows: acc[g][:] += p[g][k] * value_rows[k][:]      ([G, K] x [K, D])
// Each row pointer gets an element offset added (the kv head within a cache row), so one
// pointer array serves every head of a token.
//   max_row / exp_sum_row / multiply_row: the softmax over a chunk of scores
//   merge_partials:  combines split-K partial results (max, sum, unnormalized output)
//
// Row lengths d must be multiples of 16 (a whole number of vectors on both ISAs) and at most
// kMaxHeadDim; key counts are arbitrary.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "vec.h"

namespace pio::cpu {

constexpr int64_t kMaxHeadDim = 256;

// Lane i of the result is the sum of the lanes of v[i]: one transposing reduction instead of
// VecF::N separate horizontal sums.
#if defined(__AVX512F__)
// Level l (w = 16 >> l partials per row) pairs vectors (x, y) into z holding x's rows then y's
// rows with w/2 partials each: z[j] = src[row*w + i] + src[row*w + i + w/2], src = x:y.
struct SumEachIndex {
  alignas(64) int32_t lo[4][16];
  alignas(64) int32_t hi[4][16];
};
constexpr SumEachIndex make_sum_each_index() {
  SumEachIndex t{};
  for (int l = 0, w = 16; w > 1; ++l, w /= 2) {
    const int rows = 16 / w, half = w / 2;
    for (int j = 0; j < 16; ++j) {
      const int row = j / half, i = j % half;
      t.lo[l][j] = (row < rows ? 0 : 16) + (row % rows) * w + i;
      t.hi[l][j] = t.lo[l][j] + half;
    }
  }
  return t;
}
inline constexpr SumEachIndex kSumEachIndex = make_sum_each_index();

inline VecF sum_each(const VecF (&v)[VecF::N]) {
  __m512 level[16];
  for (int i = 0; i < 16; ++i) level[i] = v[i].v;
  for (int l = 0, count = 16; count > 1; ++l, count /= 2) {
    const __m512i a = _mm512_load_si512(kSumEachIndex.lo[l]), b = _mm512_load_si512(kSumEachIndex.hi[l]);
    for (int p = 0; p < count / 2; ++p) {
      const __m512 x = level[2 * p], y = level[2 * p + 1];
      level[p] = _mm512_add_ps(_mm512_permutex2var_ps(x, a, y), _mm512_permutex2var_ps(x, b, y));
    }
  }
  return level[0];
}
#else
inline VecF sum_each(const VecF (&v)[VecF::N]) {
  __m256 t0 = _mm256_hadd_ps(v[0].v, v[1].v), t1 = _mm256_hadd_ps(v[2].v, v[3].v);
  __m256 t2 = _mm256_hadd_ps(v[4].v, v[5].v), t3 = _mm256_hadd_ps(v[6].v, v[7].v);
  __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#endif

// dst[i] = float(src[i]) * mul over n elements (n a multiple of VecF::N).
template <class D, class S>
inline void convert_row(D* dst, const S* src, int64_t n, float mul = 1.0f) {
  const VecF m = VecF::broadcast(mul);
  for (int64_t i = 0; i < n; i += VecF::N) store(dst + i, load(src + i) * m);
}

// scores[g*ld_s + k] = q[g*ld_q : +d] . (rows[k] + off)[0 : d] for g < GT, k < n_keys <= VecF::N / GT.
template <int GT, class T>
inline void dot_tile(float* scores, int64_t ld_s, const float* q, int64_t ld_q, const T* const* rows, int64_t off, int n_keys,
                     int64_t d) {
  constexpr int KT = VecF::N / GT;
  static_assert(GT * KT == VecF::N, "GT must divide the vector width");
  const T* r[KT];
  for (int k = 0; k < KT; ++k) r[k] = rows[std::min(k, n_keys - 1)] + off;  // padding lanes reread a valid row
  VecF acc[VecF::N];
  for (auto& a : acc) a = VecF::zero();
  for (int64_t i = 0; i < d; i += VecF::N) {
    VecF kv[KT];
    for (int k = 0; k < KT; ++k) kv[k] = load(r[k] + i);
    for (int g = 0; g < GT; ++g) {
      const VecF qv = load(q + g * ld_q + i);
      for (int k = 0; k < KT; ++k) acc[g * KT + k] = fmadd(qv, kv[k], acc[g * KT + k]);
    }
  }
  alignas(64) float sums[VecF::N];
  store(sums, sum_each(acc));
  for (int g = 0; g < GT; ++g) std::memcpy(scores + g * ld_s, sums + g * KT, sizeof(float) * n_keys);
}

#if defined(__AVX512BF16__)
// bfloat16 keys against bfloat16 query rows: VDPBF16PS multiplies pairs exactly and sums them
// in float32, without widening every key element first (a third of the instructions).
template <int GT>
inline void dot_tile(float* scores, int64_t ld_s, const BFloat16* q, int64_t ld_q, const BFloat16* const* rows, int64_t off,
                     int n_keys, int64_t d) {
  constexpr int KT = 16 / GT;
  const BFloat16* r[KT];
  for (int k = 0; k < KT; ++k) r[k] = rows[std::min(k, n_keys - 1)] + off;
  VecF acc[VecF::N];
  for (auto& a : acc) a = VecF::zero();
  for (int64_t i = 0; i < d; i += 32) {
    const __mmask32 m = d - i >= 32 ? ~__mmask32(0) : __mmask32(0xFFFF);  // d is a multiple of 16
    __m512bh kv[KT];
    for (int k = 0; k < KT; ++k) kv[k] = (__m512bh)_mm512_maskz_loadu_epi16(m, r[k] + i);
    for (int g = 0; g < GT; ++g) {
      const __m512bh qv = (__m512bh)_mm512_maskz_loadu_epi16(m, q + g * ld_q + i);
      for (int k = 0; k < KT; ++k) acc[g * KT + k] = _mm512_dpbf16_ps(acc[g * KT + k].v, qv, kv[k]);
    }
  }
  alignas(64) float sums[VecF::N];
  store(sums, sum_each(acc));
  for (int g = 0; g < GT; ++g) std::memcpy(scores + g * ld_s, sums + g * KT, sizeof(float) * n_keys);
}

// The query row type dot_rows takes for keys of type T: bfloat16 rows stay bfloat16 where the
// CPU multiplies them natively, everything else is widened to float32 once per query.
template <class T> struct QueryRow { using type = float; };
template <> struct QueryRow<BFloat16> { using type = BFloat16; };
inline void load_query_row(BFloat16* dst, const BFloat16* src, int64_t n) { std::memcpy(dst, src, sizeof(BFloat16) * n); }
#else
template <class T> struct QueryRow { using type = float; };
#endif
template <class T>
inline void load_query_row(float* dst, const T* src, int64_t n) { convert_row(dst, src, n); }

// scores[g*ld_s + k] = q[g*ld_q : +d] . (rows[k] + off)[0 : d] for g < n_q, k < n_keys.
// Query rows (float32, or QueryRow<T>::type) go 4 at a time so each key row load feeds 4 dot
// products; keys go VecF::N at a time so their rows stay in L1 while every query row passes.
template <class Q, class T>
inline void dot_rows(float* scores, int64_t ld_s, const Q* q, int64_t ld_q, int64_t n_q, const T* const* rows, int64_t off,
                     int64_t n_keys, int64_t d) {
  constexpr int K4 = VecF::N / 4, K2 = VecF::N / 2;
  for (int64_t k0 = 0; k0 < n_keys; k0 += VecF::N) {
    const int nk = int(std::min<int64_t>(VecF::N, n_keys - k0));
    int64_t g = 0;
    for (; g + 4 <= n_q; g += 4)
      for (int k = 0; k < nk; k += K4)
        dot_tile<4>(scores + g * ld_s + k0 + k, ld_s, q + g * ld_q, ld_q, rows + k0 + k, off, std::min(K4, nk - k), d);
    for (; g + 2 <= n_q; g += 2)
      for (int k = 0; k < nk; k += K2)
        dot_tile<2>(scores + g * ld_s + k0 + k, ld_s, q + g * ld_q, ld_q, rows + k0 + k, off, std::min(K2, nk - k), d);
    for (; g < n_q; ++g) dot_tile<1>(scores + g * ld_s + k0, ld_s, q + g * ld_q, ld_q, rows + k0, off, nk, d);
  }
}

// acc[g*ld_a + i] += sum_k p[g*ld_p + k] * (rows[k] + off)[i] for g < GT, i in [0, d): registers
// hold a GT x CV-vector tile of acc while the keys stream through.
template <int GT, class T>
inline void accumulate_tile(float* acc, int64_t ld_a, const float* p, int64_t ld_p, const T* const* rows, int64_t off,
                            int64_t n_keys, int64_t d) {
  constexpr int CV = GT <= 2 ? 4 : 2;
  constexpr int N = VecF::N;
  int64_t i = 0;
  for (; i + CV * N <= d; i += CV * N) {
    VecF a[GT][CV];
    for (int g = 0; g < GT; ++g)
      for (int c = 0; c < CV; ++c) a[g][c] = load(acc + g * ld_a + i + c * N);
    for (int64_t k = 0; k < n_keys; ++k) {
      VecF v[CV];
      for (int c = 0; c < CV; ++c) v[c] = load(rows[k] + off + i + c * N);
      for (int g = 0; g < GT; ++g) {
        const VecF w = VecF::broadcast(p[g * ld_p + k]);
        for (int c = 0; c < CV; ++c) a[g][c] = fmadd(w, v[c], a[g][c]);
      }
    }
    for (int g = 0; g < GT; ++g)
      for (int c = 0; c < CV; ++c) store(acc + g * ld_a + i + c * N, a[g][c]);
  }
  for (; i < d; i += N) {
    VecF a[GT];
    for (int g = 0; g < GT; ++g) a[g] = load(acc + g * ld_a + i);
    for (int64_t k = 0; k < n_keys; ++k) {
      const VecF v = load(rows[k] + off + i);
      for (int g = 0; g < GT; ++g) a[g] = fmadd(VecF::broadcast(p[g * ld_p + k]), v, a[g]);
    }
    for (int g = 0; g < GT; ++g) store(acc + g * ld_a + i, a[g]);
  }
}

// acc[g*ld_a + i] += sum_k p[g*ld_p + k] * (rows[k] + off)[i] for g < n_q, k < n_keys, i < d.
template <class T>
inline void accumulate_rows(float* acc, int64_t ld_a, const float* p, int64_t ld_p, int64_t n_q, const T* const* rows,
                            int64_t off, int64_t n_keys, int64_t d) {
  constexpr int64_t KB = 16;  // value rows stay in L1 while every query row tile passes over them
  for (int64_t k0 = 0; k0 < n_keys; k0 += KB) {
    const int64_t nk = std::min(KB, n_keys - k0);
    int64_t g = 0;
    for (; g + 4 <= n_q; g += 4) accumulate_tile<4>(acc + g * ld_a, ld_a, p + g * ld_p + k0, ld_p, rows + k0, off, nk, d);
    switch (n_q - g) {
      case 3: accumulate_tile<3>(acc + g * ld_a, ld_a, p + g * ld_p + k0, ld_p, rows + k0, off, nk, d); break;
      case 2: accumulate_tile<2>(acc + g * ld_a, ld_a, p + g * ld_p + k0, ld_p, rows + k0, off, nk, d); break;
      case 1: accumulate_tile<1>(acc + g * ld_a, ld_a, p + g * ld_p + k0, ld_p, rows + k0, off, nk, d); break;
      default: break;
    }
  }
}

// Asks for the first `bytes` of each of n rows ahead of use: rows of a paged cache sit in
// scattered blocks, and without this the loads wait for memory instead of overlapping compute.
template <class T>
inline void prefetch_rows(const T* const* rows, int64_t n, int64_t bytes) {
  for (int64_t k = 0; k < n; ++k)
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(rows[k]) + b, _MM_HINT_T0);
}

inline float max_row(const float* x, int64_t n) {
  constexpr int N = VecF::N;
  VecF m = VecF::broadcast(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + N <= n; i += N) m = vmax(m, load(x + i));
  float r = reduce_max(m);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// x[i] = exp((x[i] - max) * scale); returns the sum of the new x.
inline float exp_sum_row(float* x, int64_t n, float max, float scale) {
  constexpr int N = VecF::N;
  const VecF s = VecF::broadcast(scale), ms = VecF::broadcast(max * scale);
  VecF sum = VecF::zero();
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    VecF e = vexp(fmadd(load(x + i), s, VecF::zero() - ms));
    store(x + i, e);
    sum = sum + e;
  }
  if (i < n) {
    const int t = int(n - i);
    VecF e = vexp(fmadd(load_partial(x + i, t), s, VecF::zero() - ms));
    store_partial(x + i, e, t);
    sum = sum + load_partial(x + i, t);  // the masked-off lanes of e hold exp(-max*scale), not 0
  }
  return reduce_add(sum);
}

// x[i] *= mul over n elements (n a multiple of VecF::N).
inline void multiply_row(float* x, int64_t n, float mul) { convert_row(x, x, n, mul); }

// Online softmax state of one query row: running max of the raw scores and the running sum of
// exp((score - max) * scale) over the keys seen so far.
struct SoftmaxState {
  float max = -std::numeric_limits<float>::infinity();
  float sum = 0.0f;
};

// Folds a chunk of raw scores into `st`: turns scores into weights exp((s - max) * scale) and
// rescales the row's output accumulator (length d) when the running max moves.
inline void softmax_chunk(SoftmaxState& st, float* scores, int64_t n, float scale, float* acc, int64_t d) {
  const float m = std::max(st.max, max_row(scores, n));
  if (m != st.max && st.sum != 0.0f) {
    const float alpha = std::exp((st.max - m) * scale);
    st.sum *= alpha;
    multiply_row(acc, d, alpha);
  }
  st.max = m;
  st.sum += exp_sum_row(scores, n, m, scale);
}

// One split-K partial of a query row: SoftmaxState plus the unnormalized output [d].
// Layout in scratch: [max, sum, out[0..d)] per partial, consecutive partials `stride` apart.
inline int64_t partial_stride(int64_t d) { return d + 2; }

// out[i] = normalized merge of n_parts partials (max, sum, acc) of one query row.
template <class T>
inline void merge_partials(T* out, const float* partials, int64_t stride, int64_t n_parts, int64_t d, float scale) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t p = 0; p < n_parts; ++p) m = std::max(m, partials[p * stride]);
  float total = 0.0f;
  constexpr int N = VecF::N;
  alignas(64) float row[kMaxHeadDim];
  std::fill(row, row + d, 0.0f);
  for (int64_t p = 0; p < n_parts; ++p) {
    const float* part = partials + p * stride;
    const float w = std::exp((part[0] - m) * scale);
    total += part[1] * w;
    const VecF wv = VecF::broadcast(w);
    for (int64_t i = 0; i < d; i += N) store(row + i, fmadd(load(part + 2 + i), wv, load(row + i)));
  }
  convert_row(out, row, d, 1.0f / total);
}

}  // namespace pio::cpu
