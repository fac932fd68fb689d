// Prefill (variable-length flash) attention over packed sequences, causal or not, GQA, sliding window,
// keys either packed [total_k, KVH, D] or in the paged cache [num_blocks, block_size, KVH, D].
//
// Masking is bottom-right aligned: query i of a sequence with len_q queries and len_k keys sits at
// p = len_k - len_q + i and sees key j iff j <= p (causal) and j > p - window. Rows that see no key
// are zeros.
//
// float16 / bfloat16 with head_dim a multiple of 16: tensor cores through WMMA (16x16x16, float32
// accumulation). A block of WARPS warps takes 16 * WARPS query rows of one (sequence, head) and walks
// the visible key tiles of kBc keys: S = Q K^T on tensor cores, online softmax by the lanes (two
// lanes per row), P V on tensor cores into a per-warp tile that the lanes fold into the float32
// output rows with the softmax correction. Everything else (float32, other head dims): a warp per
// (query row, head) on CUDA cores with the same online softmax.
#include <mma.h>

#include <algorithm>
#include <optional>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace pio::cuda {
namespace {

struct Params {
  const void* query;
  const void* key;
  const void* value;
  void* out;
  const int32_t* cu_q;
  const int32_t* cu_k;
  const int32_t* block_tables;  // null: packed keys
  int64_t q_stride, k_stride, v_stride, o_stride;  // between tokens (packed) or slots (paged), elements
  int64_t bt_stride;
  int block_size;
  int heads, kv_heads, head_dim, group;
  int64_t window;  // <= 0: none
  bool causal;
  float scale;
};

// Element offset of key/value row j (of KV head kvh) of sequence b, and of its first element.
__device__ __forceinline__ int64_t kv_row(const Params& p, int b, int j, int64_t stride) {
  if (p.block_tables == nullptr) return (int64_t(p.cu_k[b]) + j) * stride;
  const int64_t slot = int64_t(p.block_tables[b * p.bt_stride + j / p.block_size]) * p.block_size + j % p.block_size;
  return slot * stride;
}

__device__ __forceinline__ bool visible(const Params& p, int64_t pos, int64_t j, int64_t len_k) {
  if (j >= len_k) return false;
  if (p.causal && j > pos) return false;
  if (p.window > 0 && j <= pos - p.window) return false;
  return true;
}

// The key range [lo, hi) that query rows at positions [p0, p1] may see.
__device__ __forceinline__ void key_range(const Params& p, int64_t p0, int64_t p1, int64_t len_k, int64_t& lo,
                                          int64_t& hi) {
  hi = p.causal ? min(len_k, p1 + 1) : len_k;
  lo = p.window > 0 ? max(int64_t(0), p0 - p.window + 1) : int64_t(0);
}

// ----- CUDA-core path: a warp per (query row, head) -----

constexpr int kScalarWarps = 4;
constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256

template <class T>
__global__ void __launch_bounds__(kScalarWarps * 32) prefill_scalar_kernel(Params p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = blockIdx.y, b = blockIdx.z;
  const int64_t q0 = p.cu_q[b], len_q = p.cu_q[b + 1] - q0;
  const int64_t len_k = p.cu_k[b + 1] - p.cu_k[b];
  const int64_t i = int64_t(blockIdx.x) * kScalarWarps + warp;
  if (i >= len_q) return;
  const int D = p.head_dim, kvh = h / p.group;
  const int64_t pos = len_k - len_q + i;
  const T* q = static_cast<const T*>(p.query) + (q0 + i) * p.q_stride + int64_t(h) * D;
  float qv[kMaxDimsPerLane], acc[kMaxDimsPerLane];
#pragma unroll
  for (int e = 0; e < kMaxDimsPerLane; ++e) {
    const int d = lane + 32 * e;
    qv[e] = d < D ? to_float(q[d]) * p.scale : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  int64_t lo, hi;
  key_range(p, pos, pos, len_k, lo, hi);
  const T* kbase = static_cast<const T*>(p.key) + int64_t(kvh) * D;
  const T* vbase = static_cast<const T*>(p.value) + int64_t(kvh) * D;
  for (int64_t j = lo; j < hi; ++j) {
    if (!visible(p, pos, j, len_k)) continue;
    const T* k = kbase + kv_row(p, b, int(j), p.k_stride);
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < kMaxDimsPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < D) s += qv[e] * to_float(k[d]);
    }
    s = warp_sum(s);
    const float m_new = fmaxf(m, s);
    const float alpha = __expf(m - m_new);  // 0 on the first visible key (m = -inf)
    const float w = __expf(s - m_new);
    l = l * alpha + w;
    const T* v = vbase + kv_row(p, b, int(j), p.v_stride);
#pragma unroll
    for (int e = 0; e < kMaxDimsPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < D) acc[e] = acc[e] * alpha + w * to_float(v[d]);
    }
    m = m_new;
  }
  T* o = static_cast<T*>(p.out) + (q0 + i) * p.o_stride + int64_t(h) * D;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int e = 0; e < kMaxDimsPerLane; ++e) {
    const int d = lane + 32 * e;
    if (d < D) o[d] = from_float<T>(acc[e] * inv);
  }
}

// ----- tensor-core path (float16 / bfloat16, head_dim % 16 == 0) -----

namespace wmma = nvcuda::wmma;
constexpr int kBc = 32;  // keys per tile

template <int WARPS>
struct TileShape {
  static constexpr int rows = 16 * WARPS;  // query rows per block
};

// Shared memory: Q [rows][D], K [kBc][D], V [kBc][D] (T); per warp: S [16][kBc] f32, P [16][kBc] T,
// PV [16][D] f32, O [16][D] f32.
template <class T>
size_t smem_bytes(int warps, int D) {
  const size_t rows = 16 * size_t(warps);
  return sizeof(T) * (rows * D + 2 * size_t(kBc) * D) +
         warps * (sizeof(float) * 16 * kBc + sizeof(T) * 16 * kBc + 2 * sizeof(float) * 16 * size_t(D));
}

// Copies `rows` rows of D elements (16-byte chunks; D % 8 == 0) into shared memory; rows past `valid`
// are zero so that masked keys contribute exactly nothing (P = 0 times a zero V row).
template <class T, class RowPtr>
__device__ void load_rows(T* dst, int rows, int valid, int D, RowPtr row_ptr) {
  const int chunks = D / 8;  // 8 x 16-bit = 16 bytes
  for (int idx = threadIdx.x; idx < rows * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = idx % chunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < valid) v = reinterpret_cast<const uint4*>(row_ptr(r))[c];
    reinterpret_cast<uint4*>(dst + r * D)[c] = v;
  }
}

template <class T, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) prefill_wmma_kernel(Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int ROWS = TileShape<WARPS>::rows;
  const int D = p.head_dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / p.group;
  const int64_t q0 = p.cu_q[b], len_q = p.cu_q[b + 1] - q0;
  const int64_t len_k = p.cu_k[b + 1] - p.cu_k[b];
  const int64_t tile0 = int64_t(blockIdx.x) * ROWS;
  if (tile0 >= len_q) return;
  const int tile_rows = int(min(int64_t(ROWS), len_q - tile0));

  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + ROWS * D;
  T* Vs = Ks + kBc * D;
  unsigned char* warp_base = reinterpret_cast<unsigned char*>(Vs + kBc * D) +
                             size_t(warp) * (sizeof(float) * 16 * kBc + sizeof(T) * 16 * kBc +
                                             2 * sizeof(float) * 16 * size_t(D));
  float* S = reinterpret_cast<float*>(warp_base);
  T* P = reinterpret_cast<T*>(S + 16 * kBc);
  float* PV = reinterpret_cast<float*>(P + 16 * kBc);
  float* O = PV + 16 * D;

  const T* qg = static_cast<const T*>(p.query) + int64_t(h) * D;
  load_rows(Qs, ROWS, tile_rows, D, [&](int r) { return qg + (q0 + tile0 + r) * p.q_stride; });
  for (int i = lane; i < 16 * D; i += 32) O[i] = 0.0f;

  // Two lanes per row: lane / 2 is the row within the warp's 16, lane % 2 the half of the key tile.
  const int my_row = lane >> 1, half = lane & 1;
  const int64_t row_in_seq = tile0 + warp * 16 + my_row;
  const int64_t pos = len_k - len_q + row_in_seq;
  float m = -INFINITY, l = 0.0f;

  // Keys any row of this block can see.
  int64_t lo, hi;
  key_range(p, len_k - len_q + tile0, len_k - len_q + tile0 + tile_rows - 1, len_k, lo, hi);
  lo = lo / kBc * kBc;
  const T* kg = static_cast<const T*>(p.key) + int64_t(kvh) * D;
  const T* vg = static_cast<const T*>(p.value) + int64_t(kvh) * D;

  for (int64_t j0 = lo; j0 < hi; j0 += kBc) {
    const int valid = int(min(int64_t(kBc), len_k - j0));
    __syncthreads();  // the previous tile's K/V are no longer read
    load_rows(Ks, kBc, valid, D, [&](int r) { return kg + kv_row(p, b, int(j0 + r), p.k_stride); });
    load_rows(Vs, kBc, valid, D, [&](int r) { return vg + kv_row(p, b, int(j0 + r), p.v_stride); });
    __syncthreads();

    // S = Q K^T for this warp's 16 rows.
#pragma unroll
    for (int jb = 0; jb < kBc / 16; ++jb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      wmma::fill_fragment(c, 0.0f);
      for (int d0 = 0; d0 < D; d0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> bk;
        wmma::load_matrix_sync(a, Qs + (warp * 16) * D + d0, D);
        wmma::load_matrix_sync(bk, Ks + (jb * 16) * D + d0, D);
        wmma::mma_sync(c, a, bk, c);
      }
      wmma::store_matrix_sync(S + jb * 16, c, kBc, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax over the tile: each lane takes half of its row's kBc scores.
    constexpr int kHalf = kBc / 2;
    float* srow = S + my_row * kBc + half * kHalf;
    float tile_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < kHalf; ++c) {
      const int64_t j = j0 + half * kHalf + c;
      const float s = visible(p, pos, j, len_k) ? srow[c] * p.scale : -INFINITY;
      srow[c] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    // A row that has seen nothing yet keeps m = -inf: its weights are 0 and its sums untouched.
    const float alpha = m_new == -INFINITY ? 1.0f : __expf(m - m_new);
    float sum = 0.0f;
    T* prow = P + my_row * kBc + half * kHalf;
#pragma unroll
    for (int c = 0; c < kHalf; ++c) {
      const float w = m_new == -INFINITY ? 0.0f : __expf(srow[c] - m_new);
      prow[c] = from_float<T>(w);
      sum += w;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    __syncwarp();

    // PV = P V on tensor cores, then O = O * alpha + PV row by row.
    for (int d0 = 0; d0 < D; d0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      wmma::fill_fragment(c, 0.0f);
#pragma unroll
      for (int jb = 0; jb < kBc / 16; ++jb) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bv;
        wmma::load_matrix_sync(a, P + jb * 16, kBc);
        wmma::load_matrix_sync(bv, Vs + (jb * 16) * D + d0, D);
        wmma::mma_sync(c, a, bv, c);
      }
      wmma::store_matrix_sync(PV + d0, c, D, wmma::mem_row_major);
    }
    __syncwarp();
    const int dh = D / 2;
    float* orow = O + my_row * D + half * dh;
    const float* pvrow = PV + my_row * D + half * dh;
    for (int d = 0; d < dh; ++d) orow[d] = orow[d] * alpha + pvrow[d];
    __syncwarp();
  }

  // Write this lane's half of its row.
  if (warp * 16 + my_row < tile_rows) {
    T* og = static_cast<T*>(p.out) + (q0 + row_in_seq) * p.o_stride + int64_t(h) * D;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int dh = D / 2;
    const float* orow = O + my_row * D + half * dh;
    for (int d = 0; d < dh; ++d) og[half * dh + d] = from_float<T>(orow[d] * inv);
  }
}

template <class T, int WARPS>
void launch_wmma(const Params& p, int64_t max_seqlen_q, int batch, cudaStream_t stream) {
  const size_t smem = smem_bytes<T>(WARPS, p.head_dim);
  auto kernel = prefill_wmma_kernel<T, WARPS>;
  check_cuda_call(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
                  "prefill_attention: shared memory opt-in");
  const dim3 grid(unsigned(ceil_div(max_seqlen_q, TileShape<WARPS>::rows)), unsigned(p.heads), unsigned(batch));
  kernel<<<grid, WARPS * 32, smem, stream>>>(p);
}

void check_qkv(const TensorView& t, const char* name, const TensorView& query, int ndim) {
  check_on_device(t, name, query.device_index);
  check_ndim(t, name, ndim);
  check_same_dtype(t, name, query, "query");
  check_dim(t, name, ndim - 1, query.size(2));
  check_last_dim_contiguous(t, name);
  PIO_CHECK(t.size(ndim - 2) <= 1 || t.stride(ndim - 2) == t.size(ndim - 1), name,
            ": heads must be contiguous within a token");
}

void check_cu(const TensorView& t, const char* name, int device) {
  check_on_device(t, name, device);
  check_dtype(t, name, DType::Int32);
  check_ndim(t, name, 1);
  check_contiguous(t, name);
  PIO_CHECK(t.size(0) >= 1, name, " must have batch + 1 >= 1 entries");
}

}  // namespace

void prefill_attention(const TensorView& out, const TensorView& query, const TensorView& key, const TensorView& value,
                       const TensorView& cu_seqlens_q, const TensorView& cu_seqlens_k, bool causal, double scale,
                       std::optional<int64_t> sliding_window, std::optional<TensorView> block_tables,
                       int64_t max_seqlen_q) {
  check_cuda(query, "query");
  check_float(query, "query");
  check_ndim(query, "query", 3);
  check_last_dim_contiguous(query, "query");
  const int device = query.device_index;
  const bool paged = block_tables.has_value();
  check_qkv(key, "key", query, paged ? 4 : 3);
  check_qkv(value, "value", query, paged ? 4 : 3);
  check_qkv(out, "out", query, 3);
  check_dim(out, "out", 0, query.size(0));
  check_dim(out, "out", 1, query.size(1));
  check_cu(cu_seqlens_q, "cu_seqlens_q", device);
  check_cu(cu_seqlens_k, "cu_seqlens_k", device);
  PIO_CHECK(cu_seqlens_q.size(0) == cu_seqlens_k.size(0), "cu_seqlens_q and cu_seqlens_k must have the same length");
  const int64_t batch = cu_seqlens_q.size(0) - 1;
  const int64_t heads = query.size(1), head_dim = query.size(2);
  const int64_t kv_heads = paged ? key.size(2) : key.size(1);
  PIO_CHECK(kv_heads > 0 && heads % kv_heads == 0, "num_heads (", heads, ") must be a multiple of num_kv_heads (",
            kv_heads, ")");
  PIO_CHECK(head_dim <= 256, "the cuda kernel supports head_dim up to 256, got ", head_dim);
  if (paged) {
    check_on_device(*block_tables, "block_tables", device);
    check_dtype(*block_tables, "block_tables", DType::Int32);
    check_ndim(*block_tables, "block_tables", 2);
    check_dim(*block_tables, "block_tables", 0, batch);
    check_contiguous(key, "key");
    check_contiguous(value, "value");
  }
  PIO_CHECK(max_seqlen_q >= 0, "max_seqlen_q must be >= 0, got ", max_seqlen_q);
  if (batch == 0 || query.size(0) == 0 || max_seqlen_q == 0) return;
  PIO_CHECK(batch <= 65535 && heads <= 65535, "batch and num_heads must be at most 65535");

  DeviceGuard guard(query);
  Params p{};
  p.query = query.data;
  p.key = key.data;
  p.value = value.data;
  p.out = out.data;
  p.cu_q = static_cast<const int32_t*>(cu_seqlens_q.data);
  p.cu_k = static_cast<const int32_t*>(cu_seqlens_k.data);
  p.block_tables = paged ? static_cast<const int32_t*>(block_tables->data) : nullptr;
  p.bt_stride = paged ? block_tables->stride(0) : 0;
  p.block_size = paged ? int(key.size(1)) : 0;
  // Element distance between consecutive tokens (packed) or slots (paged).
  p.q_stride = query.stride(0);
  p.k_stride = paged ? key.stride(1) : key.stride(0);
  p.v_stride = paged ? value.stride(1) : value.stride(0);
  p.o_stride = out.stride(0);
  p.heads = int(heads);
  p.kv_heads = int(kv_heads);
  p.head_dim = int(head_dim);
  p.group = int(heads / kv_heads);
  p.window = sliding_window.value_or(0);
  p.causal = causal;
  p.scale = float(scale);
  cudaStream_t stream = stream_of(query);

  const auto aligned = [](const TensorView& t, int64_t stride) {
    return (reinterpret_cast<uintptr_t>(t.data) & 15u) == 0 && stride % 8 == 0;
  };
  const bool tensor_cores = query.dtype != DType::Float32 && head_dim % 16 == 0 && aligned(query, p.q_stride) &&
                            aligned(key, p.k_stride) && aligned(value, p.v_stride);
  PIO_CUDA_DISPATCH_FLOAT(query.dtype, "query", [&] {
    using T = scalar_t;
    if constexpr (!std::is_same_v<T, float>) {
      if (tensor_cores) {
        if (head_dim > 128) launch_wmma<T, 2>(p, max_seqlen_q, int(batch), stream);
        else launch_wmma<T, 4>(p, max_seqlen_q, int(batch), stream);
        return;
      }
    }
    const dim3 grid(unsigned(ceil_div(max_seqlen_q, kScalarWarps)), unsigned(heads), unsigned(batch));
    prefill_scalar_kernel<T><<<grid, kScalarWarps * 32, 0, stream>>>(p);
  });
  check_launch("prefill_attention");
}

}  // namespace pio::cuda
