// Paged decode attention: one query token per sequence against its paged KV cache.
//
// query [B, H, D]; key_cache / value_cache [num_blocks, block_size, KVH, D]; block_tables int32
// [B, max_blocks]; context_lens int32 [B]. A thread block serves one (partition of the context,
// KV head, sequence): the G = H / KVH query heads of the GQA group share every key and value row
// it reads, so each row is read once per group. Scores of the partition live in shared memory;
// with several partitions (split-K, long contexts) each writes its normalized partial output with
// its max and sum, and a second kernel combines them.
#include <algorithm>
#include <optional>
#include <utility>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace pio::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 16;
constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;  // 2
constexpr int kDimsPerLane = kMaxHeadDim / 32;          // 8

// Partition length: the group's scores (G x P floats) stay within 8 KB of shared memory.
int partition_tokens(int group) { return group <= 4 ? 512 : group <= 8 ? 256 : 128; }

struct Params {
  const void* query;
  const void* key_cache;
  const void* value_cache;
  void* out;
  const int32_t* block_tables;
  const int32_t* context_lens;
  float* part_out;  // [B, H, parts, D] when parts > 1
  float* part_max;  // [B, H, parts]
  float* part_sum;  // [B, H, parts]
  int64_t q_stride_token, q_stride_head;
  int64_t o_stride_token, o_stride_head;
  int64_t bt_stride;
  int block_size, kv_heads, head_dim, group, heads, parts, partition;
  int64_t sliding_window;  // <= 0: none
  float scale;
};

template <class T>
__global__ void __launch_bounds__(kThreads) decode_kernel(Params p) {
  extern __shared__ float smem[];
  float* q_s = smem;                                  // [G][D]
  float* scores = smem + p.group * p.head_dim;        // [G][P]
  const int part = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = p.group, D = p.head_dim, P = p.partition;
  const int ctx = p.context_lens[b];
  int first = 0;
  if (p.sliding_window > 0 && ctx > p.sliding_window) first = int(ctx - p.sliding_window);
  const int begin = max(first, part * P), end = min(ctx, (part + 1) * P);
  const int n = max(0, end - begin);

  const T* q = static_cast<const T*>(p.query) + b * p.q_stride_token;
  for (int i = tid; i < G * D; i += kThreads) {
    const int g = i / D, d = i % D;
    q_s[i] = to_float(q[int64_t(kvh * G + g) * p.q_stride_head + d]);
  }
  __syncthreads();

  const T* kc = static_cast<const T*>(p.key_cache);
  const T* vc = static_cast<const T*>(p.value_cache);
  const int32_t* table = p.block_tables + b * p.bt_stride;
  const int64_t row_stride = int64_t(p.kv_heads) * D;  // elements between consecutive slots
  auto row_of = [&](int j) -> int64_t {
    const int64_t slot = int64_t(table[j / p.block_size]) * p.block_size + j % p.block_size;
    return slot * row_stride + int64_t(kvh) * D;
  };

  // Scores: a warp per key row, lanes over the head dimension, G dot products per row.
  for (int t = warp; t < n; t += kWarps) {
    const T* k = kc + row_of(begin + t);
    float kv[kDimsPerLane];
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int d = lane + 32 * i;
      kv[i] = d < D ? to_float(k[d]) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= G) break;
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < D) s += q_s[g * D + d] * kv[i];
      }
      s = warp_sum(s);
      if (lane == 0) scores[g * P + t] = s * p.scale;
    }
  }
  __syncthreads();

  // Softmax statistics: a warp per query head.
  __shared__ float head_max[kMaxGroup], head_sum[kMaxGroup];
  for (int g = warp; g < G; g += kWarps) {
    float m = -INFINITY;
    for (int t = lane; t < n; t += 32) m = fmaxf(m, scores[g * P + t]);
    m = warp_max(m);
    float l = 0.0f;
    for (int t = lane; t < n; t += 32) {
      const float e = __expf(scores[g * P + t] - m);
      scores[g * P + t] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) {
      head_max[g] = m;
      head_sum[g] = l;
    }
  }
  __syncthreads();

  // Weighted values: threads over the head dimension, every query head of the group at once.
  float acc[kMaxGroup][kDimsPerThread];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g)
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) acc[g][i] = 0.0f;
  for (int t = 0; t < n; ++t) {
    const T* v = vc + row_of(begin + t);
    float vv[kDimsPerThread];
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) {
      const int d = tid + kThreads * i;
      vv[i] = d < D ? to_float(v[d]) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= G) break;
      const float w = scores[g * P + t];
#pragma unroll
      for (int i = 0; i < kDimsPerThread; ++i) acc[g][i] += w * vv[i];
    }
  }

#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= G) break;
    const int h = kvh * G + g;
    const float l = head_sum[g];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    if (p.parts == 1) {
      T* o = static_cast<T*>(p.out) + b * p.o_stride_token + int64_t(h) * p.o_stride_head;
#pragma unroll
      for (int i = 0; i < kDimsPerThread; ++i) {
        const int d = tid + kThreads * i;
        if (d < D) o[d] = from_float<T>(acc[g][i] * inv);
      }
    } else {
      const int64_t idx = (int64_t(b) * p.heads + h) * p.parts + part;
      float* o = p.part_out + idx * D;
#pragma unroll
      for (int i = 0; i < kDimsPerThread; ++i) {
        const int d = tid + kThreads * i;
        if (d < D) o[d] = acc[g][i] * inv;
      }
      if (tid == 0) {
        p.part_max[idx] = n > 0 ? head_max[g] : -INFINITY;
        p.part_sum[idx] = l;
      }
    }
  }
}

// Combines the partitions of one (sequence, head): weights l_p * exp(m_p - M) over their sum.
template <class T>
__global__ void __launch_bounds__(kThreads) combine_kernel(Params p) {
  const int h = blockIdx.x, b = blockIdx.y;
  const int64_t base = (int64_t(b) * p.heads + h) * p.parts;
  float m = -INFINITY;
  for (int i = 0; i < p.parts; ++i) m = fmaxf(m, p.part_max[base + i]);
  float total = 0.0f;
  for (int i = 0; i < p.parts; ++i) {
    const float l = p.part_sum[base + i];
    if (l > 0.0f) total += l * __expf(p.part_max[base + i] - m);
  }
  T* o = static_cast<T*>(p.out) + b * p.o_stride_token + int64_t(h) * p.o_stride_head;
  for (int d = threadIdx.x; d < p.head_dim; d += kThreads) {
    float acc = 0.0f;
    for (int i = 0; i < p.parts; ++i) {
      const float l = p.part_sum[base + i];
      if (l > 0.0f) acc += l * __expf(p.part_max[base + i] - m) * p.part_out[(base + i) * p.head_dim + d];
    }
    o[d] = from_float<T>(total > 0.0f ? acc / total : 0.0f);
  }
}

}  // namespace

void paged_decode_attention(const TensorView& out, const TensorView& query, const TensorView& key_cache,
                            const TensorView& value_cache, const TensorView& block_tables,
                            const TensorView& context_lens, double scale, std::optional<int64_t> sliding_window,
                            std::optional<int64_t> max_context_len) {
  check_cuda(query, "query");
  check_float(query, "query");
  check_ndim(query, "query", 3);
  check_last_dim_contiguous(query, "query");
  const int device = query.device_index;
  const int64_t batch = query.size(0), heads = query.size(1), head_dim = query.size(2);
  for (auto [t, name] : {std::pair{&key_cache, "key_cache"}, std::pair{&value_cache, "value_cache"}}) {
    check_on_device(*t, name, device);
    check_ndim(*t, name, 4);
    check_contiguous(*t, name);
    check_same_dtype(*t, name, query, "query");
    check_dim(*t, name, 3, head_dim);
  }
  PIO_CHECK(value_cache.size(0) == key_cache.size(0) && value_cache.size(1) == key_cache.size(1) &&
                value_cache.size(2) == key_cache.size(2),
            "value_cache must have key_cache's shape ", key_cache.shape_str(), ", got ", value_cache.shape_str());
  const int64_t kv_heads = key_cache.size(2);
  PIO_CHECK(kv_heads > 0 && heads % kv_heads == 0, "num_heads (", heads, ") must be a multiple of num_kv_heads (",
            kv_heads, ")");
  const int64_t group = heads / kv_heads;
  PIO_CHECK(group <= kMaxGroup, "the cuda kernel supports at most ", kMaxGroup, " query heads per KV head, got ",
            group);
  PIO_CHECK(head_dim <= kMaxHeadDim, "the cuda kernel supports head_dim up to ", kMaxHeadDim, ", got ", head_dim);
  check_on_device(out, "out", device);
  check_ndim(out, "out", 3);
  check_dim(out, "out", 0, batch);
  check_dim(out, "out", 1, heads);
  check_dim(out, "out", 2, head_dim);
  check_last_dim_contiguous(out, "out");
  check_same_dtype(out, "out", query, "query");
  check_on_device(block_tables, "block_tables", device);
  check_dtype(block_tables, "block_tables", DType::Int32);
  check_ndim(block_tables, "block_tables", 2);
  check_dim(block_tables, "block_tables", 0, batch);
  check_last_dim_contiguous(block_tables, "block_tables");
  check_on_device(context_lens, "context_lens", device);
  check_dtype(context_lens, "context_lens", DType::Int32);
  check_ndim(context_lens, "context_lens", 1);
  check_dim(context_lens, "context_lens", 0, batch);
  check_contiguous(context_lens, "context_lens");
  PIO_CHECK(max_context_len.has_value(), "the cuda backend needs max_context_len (a host int) to size its grid");
  PIO_CHECK(*max_context_len >= 0, "max_context_len must be >= 0, got ", *max_context_len);
  if (batch == 0) return;
  PIO_CHECK(batch <= 65535 && kv_heads <= 65535, "batch and num_kv_heads must be at most 65535");

  DeviceGuard guard(query);
  cudaStream_t stream = stream_of(query);
  Params p{};
  p.query = query.data;
  p.key_cache = key_cache.data;
  p.value_cache = value_cache.data;
  p.out = out.data;
  p.block_tables = static_cast<const int32_t*>(block_tables.data);
  p.context_lens = static_cast<const int32_t*>(context_lens.data);
  p.q_stride_token = query.stride(0);
  p.q_stride_head = query.stride(1);
  p.o_stride_token = out.stride(0);
  p.o_stride_head = out.stride(1);
  p.bt_stride = block_tables.stride(0);
  p.block_size = int(key_cache.size(1));
  p.kv_heads = int(kv_heads);
  p.head_dim = int(head_dim);
  p.group = int(group);
  p.heads = int(heads);
  p.partition = partition_tokens(p.group);
  p.parts = int(std::max<int64_t>(1, ceil_div(*max_context_len, p.partition)));
  p.sliding_window = sliding_window.value_or(0);
  p.scale = float(scale);
  const size_t smem = sizeof(float) * size_t(p.group) * (p.head_dim + p.partition);

  float* workspace = nullptr;
  if (p.parts > 1) {
    const size_t n = size_t(batch) * heads * p.parts;
    check_cuda_call(cudaMallocAsync(reinterpret_cast<void**>(&workspace), sizeof(float) * n * (head_dim + 2), stream),
                    "cudaMallocAsync (split-K workspace)");
    p.part_out = workspace;
    p.part_max = workspace + n * head_dim;
    p.part_sum = p.part_max + n;
  }
  const dim3 grid(unsigned(p.parts), unsigned(kv_heads), unsigned(batch));
  PIO_CUDA_DISPATCH_FLOAT(query.dtype, "query", [&] {
    decode_kernel<scalar_t><<<grid, kThreads, smem, stream>>>(p);
    if (p.parts > 1) combine_kernel<scalar_t><<<dim3(unsigned(heads), unsigned(batch)), kThreads, 0, stream>>>(p);
  });
  cudaError_t launch = cudaGetLastError();
  if (workspace != nullptr) cudaFreeAsync(workspace, stream);
  check_cuda_call(launch, "paged_decode_attention");
}

}  // namespace pio::cuda
