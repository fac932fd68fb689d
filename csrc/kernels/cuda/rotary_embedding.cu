// Rotary embedding in place on query [T, H, D] and key [T, KH, D] (any token stride, heads contiguous),
// NeoX (x[i], x[i + rot/2]) or GPT-J (x[2i], x[2i + 1]) pairs, the first rot dims of each head.
// cos_sin_cache [max_position, rot]: cos in the first rot/2 columns, sin in the last.
// One block per token; its threads walk the (head, pair) grid of that token.
#include <algorithm>
#include <optional>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace pio::cuda {
namespace {

template <class T, class C, class P>
__global__ void rotary_kernel(const P* __restrict__ positions, int64_t pos_stride, T* __restrict__ query,
                              int64_t q_token_stride, int q_heads, T* __restrict__ key, int64_t k_token_stride,
                              int k_heads, const C* __restrict__ cache, int64_t max_position, int rot, int head_dim,
                              bool is_neox) {
  const int64_t t = blockIdx.x;
  const int64_t pos = int64_t(positions[t * pos_stride]);
  if (pos < 0 || pos >= max_position) return;  // validated on the host; never read out of bounds
  const int half = rot / 2;
  const C* cos = cache + pos * rot;
  const C* sin = cos + half;
  const int pairs = (q_heads + k_heads) * half;
  for (int idx = threadIdx.x; idx < pairs; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    T* x = h < q_heads ? query + t * q_token_stride + int64_t(h) * head_dim
                       : key + t * k_token_stride + int64_t(h - q_heads) * head_dim;
    const int a = is_neox ? i : 2 * i;
    const int b = is_neox ? i + half : 2 * i + 1;
    const float c = to_float(cos[i]), s = to_float(sin[i]);
    const float x1 = to_float(x[a]), x2 = to_float(x[b]);
    x[a] = from_float<T>(x1 * c - x2 * s);
    x[b] = from_float<T>(x2 * c + x1 * s);
  }
}

void check_heads(const TensorView& t, const char* name, int64_t tokens, int64_t head_dim, int device) {
  check_on_device(t, name, device);
  PIO_CHECK(t.ndim == 3, name, " must be 3-D [num_tokens, num_heads, head_dim], got shape ", t.shape_str());
  check_dim(t, name, 0, tokens);
  check_dim(t, name, 2, head_dim);
  check_last_dim_contiguous(t, name);
  PIO_CHECK(t.size(1) <= 1 || t.stride(1) == head_dim, name, ": heads must be contiguous within a token");
}

}  // namespace

void rotary_embedding(const TensorView& positions, const TensorView& query, const std::optional<TensorView>& key,
                      const TensorView& cache, bool is_neox) {
  check_float(query, "query");
  PIO_CHECK(query.ndim == 3, "query must be 3-D [num_tokens, num_heads, head_dim], got shape ", query.shape_str());
  const int device = query.device_index;
  const int64_t tokens = query.size(0), head_dim = query.size(2);
  check_heads(query, "query", tokens, head_dim, device);
  if (key) {
    check_heads(*key, "key", tokens, head_dim, device);
    check_same_dtype(*key, "key", query, "query");
  }
  check_on_device(positions, "positions", device);
  check_ndim(positions, "positions", 1);
  check_dim(positions, "positions", 0, tokens);
  PIO_CHECK(positions.dtype == DType::Int64 || positions.dtype == DType::Int32, "positions must be int64 or int32, got ",
            dtype_name(positions.dtype));
  check_on_device(cache, "cos_sin_cache", device);
  check_ndim(cache, "cos_sin_cache", 2);
  check_contiguous(cache, "cos_sin_cache");
  const int64_t rot = cache.size(1);
  PIO_CHECK(rot % 2 == 0 && rot > 0 && rot <= head_dim, "cos_sin_cache.shape[1] (rotary_dim) must be even and in (0, ",
            head_dim, "], got ", rot);
  PIO_CHECK(cache.dtype == query.dtype || cache.dtype == DType::Float32,
            "cos_sin_cache must be float32 or query's dtype, got ", dtype_name(cache.dtype));
  if (tokens == 0) return;
  PIO_CHECK(tokens <= 0x7fffffff, "too many tokens for one launch: ", tokens);
  DeviceGuard guard(query);
  const int q_heads = int(query.size(1)), k_heads = key ? int(key->size(1)) : 0;
  const int threads = int(std::min<int64_t>(256, ((q_heads + k_heads) * rot / 2 + 31) / 32 * 32));
  PIO_CUDA_DISPATCH_FLOAT(query.dtype, "query", [&] {
    using T = scalar_t;
    T* q = static_cast<T*>(query.data);
    T* k = key ? static_cast<T*>(key->data) : nullptr;
    const int64_t ks = key ? key->stride(0) : 0;
    auto go = [&](const auto* c) {
      if (positions.dtype == DType::Int64)
        rotary_kernel<<<unsigned(tokens), threads, 0, stream_of(query)>>>(
            static_cast<const int64_t*>(positions.data), positions.stride(0), q, query.stride(0), q_heads, k, ks,
            k_heads, c, cache.size(0), int(rot), int(head_dim), is_neox);
      else
        rotary_kernel<<<unsigned(tokens), threads, 0, stream_of(query)>>>(
            static_cast<const int32_t*>(positions.data), positions.stride(0), q, query.stride(0), q_heads, k, ks,
            k_heads, c, cache.size(0), int(rot), int(head_dim), is_neox);
    };
    if (cache.dtype == DType::Float32) go(static_cast<const float*>(cache.data));
    else go(static_cast<const T*>(cache.data));
  });
  check_launch("rotary_embedding");
}

}  // namespace pio::cuda
