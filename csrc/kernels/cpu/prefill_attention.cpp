// Prefill (variable-length flash) attention over packed sequences, optionally reading K/V from a
// paged cache. Layouts and masking rules: python/inference_pio/ops/prefill_attention.py.
//
// Work item = (sequence, kv head, tile of query tokens); its rows are the (token, query head)
// pairs of one GQA group, so each K/V tile is converted to float32 once and reused by every head
// of the group. Per key tile: S^T = K Q^T (Q^T packed into panels once per item), online softmax
// vectorised across query rows, O = alpha * O + P V; one rounding at the end.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"
#include "vec.h"

namespace pio::cpu {
namespace {

constexpr int N = VecF::N;
constexpr int kPanel = 2 * N;                 // query rows per Q^T panel: two vectors
constexpr int kKeyTile = 64;                  // keys per streamed K/V tile
constexpr int kTargetRows = 64;               // query rows (tokens x group heads) per work item
constexpr int kQkKeys = N == 16 ? 8 : 4;      // keys per Q.K micro-kernel: 2*kQkKeys accumulators
constexpr int kPvRows = 4;                    // query rows per P.V micro-kernel
constexpr int kPvVecs = N == 16 ? 4 : 2;      // head-dim vectors per P.V micro-kernel
constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kMaxPosition = 1 << 24;     // positions are compared as float32: exact below 2^24
const float kNegInf = -std::numeric_limits<float>::infinity();

struct Problem {
  int64_t heads, kv_heads, group, head_dim;
  const int32_t* cu_q;
  const int32_t* cu_k;
  const int32_t* block_tables;  // null unless paged
  int64_t max_blocks, block_size;
  bool causal;
  int64_t window;  // 0: none
  float scale;
};

struct WorkItem {
  int32_t seq, kv_head, t0, t1;  // query tokens [t0, t1) of the sequence
  int64_t cost;
};

struct Workspace {
  std::vector<float> qt, s, o, kf, vf, row_max, row_sum, alpha, pos, lo;
  Workspace(int64_t max_rows, int64_t head_dim)
      : qt(max_rows * head_dim), s(kKeyTile * max_rows), o(max_rows * head_dim), kf(kKeyTile * head_dim),
        vf(kKeyTile * head_dim), row_max(max_rows), row_sum(max_rows), alpha(max_rows), pos(max_rows), lo(max_rows) {}
};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// s[i][0:kPanel] = sum_d k[i][d] * qt[d][0:kPanel] for NK keys: a register-blocked GEMM tile.
template <int NK>
inline void qk_kernel(float* s, int64_t s_stride, const float* qt, const float* k, int64_t d_len) {
  VecF acc[NK][2];
  for (int i = 0; i < NK; ++i) acc[i][0] = acc[i][1] = VecF::zero();
  for (int64_t d = 0; d < d_len; ++d) {
    VecF q0 = load(qt + d * kPanel), q1 = load(qt + d * kPanel + N);
    for (int i = 0; i < NK; ++i) {
      VecF kk = VecF::broadcast(k[i * d_len + d]);
      acc[i][0] = fmadd(kk, q0, acc[i][0]);
      acc[i][1] = fmadd(kk, q1, acc[i][1]);
    }
  }
  for (int i = 0; i < NK; ++i) {
    store(s + i * s_stride, acc[i][0]);
    store(s + i * s_stride + N, acc[i][1]);
  }
}

#if defined(__AVX512BF16__)
// The same tile from bf16 pairs: qt is [d/2][kPanel] pairs (q[m][d], q[m][d+1]), k rows are raw bf16.
// vdpbf16ps multiplies pairs exactly and accumulates in float32: half the instructions of the float path.
template <int NK>
inline void qk_kernel(float* s, int64_t s_stride, const uint32_t* qt, const uint32_t* k, int64_t pairs) {
  __m512 acc[NK][2];
  for (int i = 0; i < NK; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t d = 0; d < pairs; ++d) {
    __m512bh q0 = (__m512bh)_mm512_loadu_si512(qt + d * kPanel), q1 = (__m512bh)_mm512_loadu_si512(qt + d * kPanel + N);
    for (int i = 0; i < NK; ++i) {
      __m512bh kk = (__m512bh)_mm512_set1_epi32(int(k[i * pairs + d]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], q0, kk);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], q1, kk);
    }
  }
  for (int i = 0; i < NK; ++i) {
    _mm512_storeu_ps(s + i * s_stride, acc[i][0]);
    _mm512_storeu_ps(s + i * s_stride + N, acc[i][1]);
  }
}
template <class T>
constexpr bool kUseDpBf16 = std::is_same_v<T, BFloat16>;
#else
template <class T>
constexpr bool kUseDpBf16 = false;
#endif

template <int NK, class Q>
inline void qk_keys(float* s, int64_t s_stride, const Q* qt, const Q* k, int64_t d_len, int nk) {
  if constexpr (NK > 1) {
    if (nk < NK) return qk_keys<NK - 1>(s, s_stride, qt, k, d_len, nk);
  }
  qk_kernel<NK>(s, s_stride, qt, k, d_len);
}

// o[i][0:NV*N] = alpha[i] * o[i] + sum_{n in [n_lo, n_hi)} p[n][i] * v[n][0:NV*N] for R rows.
template <int R, int NV>
inline void pv_kernel(float* o, int64_t o_stride, const float* p, int64_t p_stride, const float* v, int64_t v_stride,
                      const float* alpha, int64_t n_lo, int64_t n_hi) {
  VecF acc[R][NV];
  for (int i = 0; i < R; ++i) {
    VecF a = VecF::broadcast(alpha[i]);
    for (int c = 0; c < NV; ++c) acc[i][c] = load(o + i * o_stride + c * N) * a;
  }
  for (int64_t n = n_lo; n < n_hi; ++n) {
    VecF vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = load(v + n * v_stride + c * N);
    for (int i = 0; i < R; ++i) {
      VecF pp = VecF::broadcast(p[n * p_stride + i]);
      for (int c = 0; c < NV; ++c) acc[i][c] = fmadd(pp, vv[c], acc[i][c]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < NV; ++c) store(o + i * o_stride + c * N, acc[i][c]);
}

template <int NV>
inline void pv_vecs(float* o, int64_t o_stride, const float* p, int64_t p_stride, const float* v, int64_t v_stride,
                    const float* alpha, int64_t n_lo, int64_t n_hi, int nv) {
  if constexpr (NV > 1) {
    if (nv < NV) return pv_vecs<NV - 1>(o, o_stride, p, p_stride, v, v_stride, alpha, n_lo, n_hi, nv);
  }
  pv_kernel<kPvRows, NV>(o, o_stride, p, p_stride, v, v_stride, alpha, n_lo, n_hi);
}

template <class T>
inline void row_to_float(float* dst, const T* src, int64_t n) {
  for (int64_t d = 0; d < n; d += N) store(dst + d, load(src + d));  // head_dim is a multiple of 16
}

// Key/value row j of sequence b for kv head g, from packed [total_k, Hkv, D] or the paged cache.
template <class T>
inline const T* kv_row(const TensorView& t, const Problem& pb, int64_t b, int64_t j, int64_t g) {
  const T* base = t.ptr<T>();
  if (pb.block_tables == nullptr) return base + (pb.cu_k[b] + j) * t.stride(0) + g * t.stride(1);
  int64_t block = pb.block_tables[b * pb.max_blocks + j / pb.block_size];
  return base + block * t.stride(0) + (j % pb.block_size) * t.stride(1) + g * t.stride(2);
}

template <class T>
void attend(const Problem& pb, const WorkItem& it, const TensorView& q, const TensorView& k, const TensorView& v,
            const TensorView& out, Workspace& ws) {
  const int64_t b = it.seq, g = it.kv_head, G = pb.group, D = pb.head_dim;
  const int64_t len_q = pb.cu_q[b + 1] - pb.cu_q[b], len_k = pb.cu_k[b + 1] - pb.cu_k[b];
  const int64_t rows = (it.t1 - it.t0) * G, mp = round_up(rows, kPanel), panels = mp / kPanel;
  float* qt = ws.qt.data();
  float* s = ws.s.data();
  float* o = ws.o.data();
  float *row_max = ws.row_max.data(), *row_sum = ws.row_sum.data(), *alpha = ws.alpha.data();
  float *pos = ws.pos.data(), *lo = ws.lo.data();

  // Q^T in panels [panel][d][kPanel] (float) or [panel][d/2][kPanel] (bf16 pairs); padding rows
  // are zero and fully masked (pos -1).
  std::fill(qt + rows / kPanel * kPanel * D, qt + mp * D, 0.0f);
  const T* qbase = q.ptr<T>() + pb.cu_q[b] * q.stride(0);
  for (int64_t m = 0; m < rows; ++m) {
    const int64_t t = it.t0 + m / G, h = g * G + m % G;
    const T* qrow = qbase + t * q.stride(0) + h * q.stride(1);
    if constexpr (kUseDpBf16<T>) {
      uint32_t* col = reinterpret_cast<uint32_t*>(qt) + (m / kPanel) * (D / 2) * kPanel + m % kPanel;
      for (int64_t d = 0; d < D; d += 2) col[d / 2 * kPanel] = qrow[d].bits | uint32_t(qrow[d + 1].bits) << 16;
    } else {
      float* col = qt + (m / kPanel) * D * kPanel + m % kPanel;
      for (int64_t d = 0; d < D; ++d) col[d * kPanel] = to_float(qrow[d]);
    }
    const int64_t p = pb.causal ? len_k - len_q + t : len_k - 1;
    pos[m] = float(p);
    lo[m] = pb.window ? float(p - pb.window + 1) : -1.0f;
  }
  std::fill(pos + rows, pos + mp, -1.0f);
  std::fill(lo + rows, lo + mp, -1.0f);
  std::fill(o, o + mp * D, 0.0f);
  std::fill(row_max, row_max + mp, kNegInf);
  std::fill(row_sum, row_sum + mp, 0.0f);

  // Keys any row of the item can see; tiles outside are never loaded.
  const int64_t kv_end = std::min<int64_t>(len_k, int64_t(pos[rows - 1]) + 1);
  const int64_t kv_begin = std::max<int64_t>(0, int64_t(lo[0]));
  const VecF scale = VecF::broadcast(pb.scale);
  const VecF neg_inf = VecF::broadcast(kNegInf), lowest = VecF::broadcast(-FLT_MAX), zero = VecF::zero();
  const int64_t dvecs = D / N;

  for (int64_t j0 = kv_begin; j0 < kv_end; j0 += kKeyTile) {
    const int64_t nt = std::min<int64_t>(kKeyTile, kv_end - j0);
    for (int64_t n = 0; n < nt; ++n) {
      if constexpr (kUseDpBf16<T>)
        std::memcpy(reinterpret_cast<T*>(ws.kf.data()) + n * D, kv_row<T>(k, pb, b, j0 + n, g), D * sizeof(T));
      else
        row_to_float(ws.kf.data() + n * D, kv_row<T>(k, pb, b, j0 + n, g), D);
      row_to_float(ws.vf.data() + n * D, kv_row<T>(v, pb, b, j0 + n, g), D);
    }
    // S^T[n][m] = k_n . q_m (unscaled), skipping blocks no row of the panel sees (the softmax
    // masks whatever a skipped block leaves in s).
    for (int64_t n0 = 0; n0 < nt; n0 += kQkKeys) {
      const int nk = int(std::min<int64_t>(kQkKeys, nt - n0));
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t first = p * kPanel, last = std::min<int64_t>(first + kPanel, rows) - 1;
        if (j0 + n0 > int64_t(pos[last]) || j0 + n0 + nk <= int64_t(lo[first])) continue;
        if constexpr (kUseDpBf16<T>) {
          const uint32_t* qp = reinterpret_cast<const uint32_t*>(qt) + p * (D / 2) * kPanel;
          const uint32_t* kp = reinterpret_cast<const uint32_t*>(ws.kf.data()) + n0 * (D / 2);
          qk_keys<kQkKeys>(s + n0 * mp + p * kPanel, mp, qp, kp, D / 2, nk);
        } else {
          qk_keys<kQkKeys>(s + n0 * mp + p * kPanel, mp, qt + p * D * kPanel, ws.kf.data() + n0 * D, D, nk);
        }
      }
    }
    // Online softmax, N query rows at a time: mask, new running max, P = exp(S - max), row sums.
    for (int64_t c = 0; c < round_up(rows, N); c += N) {
      const VecF pv = load(pos + c), lov = load(lo + c);
      // Keys outside [n_lo, n_hi) are masked for all N rows; the P.V step below never reads them.
      const int64_t n_hi = std::clamp<int64_t>(int64_t(pos[std::min<int64_t>(c + N, rows) - 1]) + 1 - j0, 0, nt);
      const int64_t n_lo = std::clamp<int64_t>(int64_t(lo[c]) - j0, 0, n_hi);
      VecF mx = neg_inf;
      for (int64_t n = n_lo; n < n_hi; ++n) {
        const VecF j = VecF::broadcast(float(j0 + n));
        VecF x = load(s + n * mp + c) * scale;
        x = select_lt(pv, j, neg_inf, x);   // j > pos: in the future
        x = select_lt(j, lov, neg_inf, x);  // j <= pos - window: slid out
        store(s + n * mp + c, x);
        mx = vmax(mx, x);
      }
      const VecF m_old = load(row_max + c), m_new = vmax(m_old, mx);
      const VecF m_use = select_lt(m_new, lowest, zero, m_new);  // rows with nothing visible yet: no inf - inf
      VecF sum = zero;
      for (int64_t n = n_lo; n < n_hi; ++n) {
        const VecF x = load(s + n * mp + c);
        const VecF e = select_lt(x, lowest, zero, vexp(x - m_use));  // masked: exactly 0
        store(s + n * mp + c, e);
        sum = sum + e;
      }
      const VecF a = vexp(m_old - m_use);
      store(alpha + c, a);
      store(row_sum + c, fmadd(load(row_sum + c), a, sum));
      store(row_max + c, m_new);
    }
    // O = alpha * O + P V, each row block over the keys its rows can see in this tile.
    for (int64_t m0 = 0; m0 < round_up(rows, kPvRows); m0 += kPvRows) {
      const int64_t last = std::min<int64_t>(m0 + kPvRows, rows) - 1;
      const int64_t n_hi = std::min<int64_t>(nt, int64_t(pos[last]) + 1 - j0);
      const int64_t n_lo = std::clamp<int64_t>(int64_t(lo[m0]) - j0, 0, std::max<int64_t>(n_hi, 0));
      for (int64_t c = 0; c < dvecs; c += kPvVecs)
        pv_vecs<kPvVecs>(o + m0 * D + c * N, D, s + m0, mp, ws.vf.data() + c * N, D, alpha + m0, n_lo,
                         std::max<int64_t>(n_hi, n_lo), int(std::min<int64_t>(kPvVecs, dvecs - c)));
    }
  }

  T* obase = out.ptr<T>() + pb.cu_q[b] * out.stride(0);
  for (int64_t m = 0; m < rows; ++m) {
    const int64_t t = it.t0 + m / G, h = g * G + m % G;
    const VecF inv = VecF::broadcast(row_sum[m] > 0.0f ? 1.0f / row_sum[m] : 0.0f);  // no visible key: zeros
    T* orow = obase + t * out.stride(0) + h * out.stride(1);
    for (int64_t d = 0; d < D; d += N) store(orow + d, load(o + m * D + d) * inv);
  }
}

// Query tokens per item: a GQA group's heads fill kTargetRows rows; shrink when that leaves the
// cores without enough items to balance.
int64_t tokens_per_item(const Problem& pb, int64_t batch, int64_t threads) {
  int64_t tokens = std::max<int64_t>(1, kTargetRows / pb.group);
  for (; tokens > 1; tokens /= 2) {
    int64_t items = 0;
    for (int64_t b = 0; b < batch; ++b) items += (pb.cu_q[b + 1] - pb.cu_q[b] + tokens - 1) / tokens * pb.kv_heads;
    if (items >= 4 * threads) break;
  }
  return tokens;
}

std::vector<WorkItem> make_items(const Problem& pb, int64_t batch, int64_t tokens) {
  std::vector<WorkItem> items;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len_q = pb.cu_q[b + 1] - pb.cu_q[b], len_k = pb.cu_k[b + 1] - pb.cu_k[b];
    for (int64_t t0 = 0; t0 < len_q; t0 += tokens) {
      const int64_t t1 = std::min(len_q, t0 + tokens);
      int64_t keys = len_k;
      if (pb.causal) keys = std::min(len_k, len_k - len_q + t1);
      if (pb.window) keys -= std::max<int64_t>(0, len_k - len_q + t0 - pb.window + 1);
      for (int64_t g = 0; g < pb.kv_heads; ++g)
        items.push_back({int32_t(b), int32_t(g), int32_t(t0), int32_t(t1), (t1 - t0) * std::max<int64_t>(keys, 1)});
    }
  }
  // Largest first, handed out dynamically: causal items differ in cost by the sequence length.
  std::stable_sort(items.begin(), items.end(), [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
  return items;
}

void check_cu_seqlens(const TensorView& cu, const char* name, int64_t batch_plus_1) {
  check_cpu(cu, name);
  check_ndim(cu, name, 1);
  check_dtype(cu, name, DType::Int32);
  check_contiguous(cu, name);
  check_not_null(cu, name);
  PIO_CHECK(cu.size(0) == batch_plus_1, name, " must have ", batch_plus_1, " entries (batch + 1), got ", cu.size(0));
  const int32_t* p = cu.ptr<int32_t>();
  PIO_CHECK(p[0] == 0, name, "[0] must be 0, got ", p[0]);
  for (int64_t i = 0; i + 1 < batch_plus_1; ++i)
    PIO_CHECK(p[i + 1] >= p[i], name, " must be non-decreasing, got ", p[i], " then ", p[i + 1], " at index ", i);
}

void check_heads(const TensorView& t, const char* name, int64_t head_dim) {
  check_cpu(t, name);
  check_not_null(t, name);
  PIO_CHECK(t.size(-1) == head_dim, name, " must have head_dim ", head_dim, ", got shape ", t.shape_str());
  PIO_CHECK((t.stride(-1) == 1 || t.size(-1) == 1) && (t.stride(-2) == head_dim || t.size(-2) == 1), name,
            " must have contiguous [heads, head_dim] rows");
}

void prefill_attention(const TensorView& out, const TensorView& query, const TensorView& key, const TensorView& value,
                       const TensorView& cu_seqlens_q, const TensorView& cu_seqlens_k, bool causal, double scale,
                       std::optional<int64_t> sliding_window, std::optional<TensorView> block_tables) {
  check_float(query, "query");
  check_ndim(query, "query", 3);
  const int64_t total_q = query.size(0), heads = query.size(1), head_dim = query.size(2);
  check_heads(query, "query", head_dim);
  PIO_CHECK(head_dim % 16 == 0 && head_dim > 0 && head_dim <= kMaxHeadDim,
            "query: the cpu kernel needs head_dim a multiple of 16 up to ", kMaxHeadDim, ", got ", head_dim);
  const bool paged = block_tables.has_value();
  for (auto [t, name] : {std::pair{&key, "key"}, std::pair{&value, "value"}}) {
    check_same_dtype(*t, name, query, "query");
    check_ndim(*t, name, paged ? 4 : 3);
    check_heads(*t, name, head_dim);
    if (paged) check_contiguous(*t, name);
    for (int d = 0; d < t->ndim; ++d) check_dim(*t, name, d, key.size(d));
  }
  check_same_dtype(out, "out", query, "query");
  check_ndim(out, "out", 3);
  check_dim(out, "out", 0, total_q);
  check_dim(out, "out", 1, heads);
  check_heads(out, "out", head_dim);
  const int64_t kv_heads = key.size(-2);
  PIO_CHECK(kv_heads > 0 && heads % kv_heads == 0, "query: num_heads (", heads, ") must be a multiple of num_kv_heads (",
            kv_heads, ")");
  PIO_CHECK(std::isfinite(scale) && scale > 0, "scale must be a positive finite float, got ", scale);
  PIO_CHECK(!sliding_window || *sliding_window > 0, "sliding_window must be positive, got ", *sliding_window);
  PIO_CHECK(!sliding_window || causal, "sliding_window requires causal=True");

  check_ndim(cu_seqlens_q, "cu_seqlens_q", 1);
  const int64_t batch = cu_seqlens_q.size(0) - 1;
  PIO_CHECK(batch >= 0, "cu_seqlens_q must have batch + 1 >= 1 entries");
  check_cu_seqlens(cu_seqlens_q, "cu_seqlens_q", batch + 1);
  check_cu_seqlens(cu_seqlens_k, "cu_seqlens_k", batch + 1);
  const int32_t* cu_q = cu_seqlens_q.ptr<int32_t>();
  const int32_t* cu_k = cu_seqlens_k.ptr<int32_t>();
  PIO_CHECK(cu_q[batch] == total_q, "cu_seqlens_q[-1] must equal total_q (", total_q, "), got ", cu_q[batch]);
  if (!paged)
    PIO_CHECK(cu_k[batch] == key.size(0), "cu_seqlens_k[-1] must equal total_k (", key.size(0), "), got ", cu_k[batch]);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
    PIO_CHECK(!causal || lk >= lq, "causal attention needs len_k >= len_q, sequence ", b, " has ", lq, " queries and ",
              lk, " keys");
    PIO_CHECK(lk < kMaxPosition, "cu_seqlens_k: sequence ", b, " has ", lk, " keys, more than the cpu kernel's ",
              kMaxPosition);
  }

  Problem pb{heads, kv_heads, heads / kv_heads, head_dim, cu_q, cu_k, nullptr, 0, 0, causal,
             sliding_window.value_or(0), float(scale)};
  if (paged) {
    const TensorView& bt = *block_tables;
    check_cpu(bt, "block_tables");
    check_ndim(bt, "block_tables", 2);
    check_dtype(bt, "block_tables", DType::Int32);
    check_contiguous(bt, "block_tables");
    check_not_null(bt, "block_tables");
    check_dim(bt, "block_tables", 0, batch);
    pb.block_tables = bt.ptr<int32_t>();
    pb.max_blocks = bt.size(1);
    pb.block_size = key.size(1);
    PIO_CHECK(pb.block_size > 0, "key must have block_size > 0");
    const int64_t num_blocks = key.size(0);
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t lk = cu_k[b + 1] - cu_k[b], used = (lk + pb.block_size - 1) / pb.block_size;
      PIO_CHECK(used <= pb.max_blocks, "cu_seqlens_k: sequence ", b, " has ", lk, " keys but block_tables has room for ",
                pb.max_blocks, " blocks of ", pb.block_size);
      for (int64_t i = 0; i < used; ++i) {
        const int32_t id = pb.block_tables[b * pb.max_blocks + i];
        PIO_CHECK(id >= 0 && id < num_blocks, "block_tables[", b, "][", i, "] = ", id, " is not a block id in [0, ",
                  num_blocks, ")");
      }
    }
  }

  const int64_t threads = num_threads();
  const int64_t tokens = tokens_per_item(pb, batch, threads);
  const std::vector<WorkItem> items = make_items(pb, batch, tokens);
  const int64_t max_rows = round_up(tokens * pb.group, kPanel);
  std::atomic<int64_t> next{0};
  PIO_DISPATCH_FLOAT(query.dtype, "prefill_attention", [&] {
    parallel_for(std::min<int64_t>(threads, int64_t(items.size())), 1, [&](int64_t, int64_t) {
      Workspace ws(max_rows, head_dim);
      for (int64_t i; (i = next.fetch_add(1)) < int64_t(items.size());)
        attend<scalar_t>(pb, items[i], query, key, value, out, ws);
    });
  });
}

}  // namespace
}  // namespace pio::cpu

PIO_CPU_BINDINGS(prefill_attention) {
  namespace py = pybind11;
  m.def("prefill_attention", &pio::cpu::prefill_attention, py::arg("out"), py::arg("query"), py::arg("key"),
        py::arg("value"), py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("causal"), py::arg("scale"),
        py::arg("sliding_window"), py::arg("block_tables"), PIO_NOGIL,
        "varlen flash attention: out[total_q, H, D] over packed (or paged, with block_tables) K/V");
}
