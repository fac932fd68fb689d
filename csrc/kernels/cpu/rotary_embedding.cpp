// Rotary position embedding, in place on query [num_tokens, num_heads, head_dim] and key
// [num_tokens, num_kv_heads, head_dim] (any token stride; heads and head_dim contiguous).
// cos_sin_cache [max_position, rotary_dim] holds cos in its first half and sin in its second
// (vLLM layout); dims >= rotary_dim are left untouched. float32 math; one rounding per output.
#include <optional>
#include <vector>

#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"
#include "vec.h"

namespace pio::cpu {
namespace {

constexpr int64_t kMinElemsPerThread = 1 << 14;

// [a0, a1, a2, a3, ...] -> [a1, a0, a3, a2, ...]: the partner of each element in a GPT-J pair.
inline VecF swap_pairs(VecF a) {
#if defined(__AVX512F__)
  return _mm512_permute_ps(a.v, 0xB1);
#else
  return _mm256_permute_ps(a.v, 0xB1);
#endif
}

// NeoX: x[i] pairs with x[i + half].
template <class T, class C>
inline void rotate_neox(T* x, const C* cos, const C* sin, int64_t half) {
  constexpr int N = VecF::N;
  T* y = x + half;
  int64_t i = 0;
  for (; i + N <= half; i += N) {
    VecF x1 = load(x + i), x2 = load(y + i), c = load(cos + i), s = load(sin + i);
    store(x + i, x1 * c - x2 * s);
    store(y + i, x2 * c + x1 * s);
  }
  if (i < half) {
    int t = int(half - i);
    VecF x1 = load_partial(x + i, t), x2 = load_partial(y + i, t);
    VecF c = load_partial(cos + i, t), s = load_partial(sin + i, t);
    store_partial(x + i, x1 * c - x2 * s, t);
    store_partial(y + i, x2 * c + x1 * s, t);
  }
}

// GPT-J: x[2i] pairs with x[2i+1]. cos2 = [c0, c0, c1, c1, ...], sin2 = [-s0, s0, -s1, s1, ...]
// (prepared once per token), so out = x * cos2 + swap_pairs(x) * sin2 needs no deinterleave.
template <class T>
inline void rotate_gptj(T* x, const float* cos2, const float* sin2, int64_t rot) {
  constexpr int N = VecF::N;
  int64_t i = 0;
  for (; i + N <= rot; i += N) {
    VecF v = load(x + i);
    store(x + i, v * load(cos2 + i) + swap_pairs(v) * load(sin2 + i));
  }
  if (i < rot) {  // rot is even, so a tail never splits a pair
    int t = int(rot - i);
    VecF v = load_partial(x + i, t);
    store_partial(x + i, v * load_partial(cos2 + i, t) + swap_pairs(v) * load_partial(sin2 + i, t), t);
  }
}

struct Rows {
  char* base;  // bytes, so query and key share one code path
  int64_t token_stride_bytes;
  int64_t head_stride_bytes;
};

template <class T, class C, class P>
void rotary_impl(const TensorView& positions, const TensorView& query, const std::optional<TensorView>& key,
                 const TensorView& cache, bool is_neox) {
  const int64_t tokens = query.size(0), q_heads = query.size(1);
  const int64_t kv_heads = key ? key->size(1) : 0;
  const int64_t heads = q_heads + kv_heads;
  const int64_t rot = cache.size(1), half = rot / 2;
  const P* pos = positions.ptr<P>();
  const int64_t pos_stride = positions.stride(0);
  const C* cache_p = cache.ptr<C>();
  auto rows_of = [&](const TensorView& t) {
    return Rows{static_cast<char*>(t.data), t.stride(0) * int64_t(sizeof(T)), t.stride(1) * int64_t(sizeof(T))};
  };
  const Rows q = rows_of(query);
  const Rows k = key ? rows_of(*key) : Rows{nullptr, 0, 0};

  // Work items are (token, head) pairs, so a single decode token still spreads over the cores.
  parallel_for(tokens * heads, std::max<int64_t>(1, kMinElemsPerThread / std::max<int64_t>(rot, 1)),
               [&](int64_t b, int64_t e) {
    std::vector<float> table(is_neox ? 0 : 2 * rot);
    float* cos2 = table.data();
    float* sin2 = cos2 + rot;
    for (int64_t t = b / heads; t * heads < e; ++t) {
      const C* cos = cache_p + int64_t(pos[t * pos_stride]) * rot;
      const C* sin = cos + half;
      if (!is_neox) {
        for (int64_t i = 0; i < half; ++i) {
          float c = to_float(cos[i]), s = to_float(sin[i]);
          cos2[2 * i] = cos2[2 * i + 1] = c;
          sin2[2 * i] = -s;
          sin2[2 * i + 1] = s;
        }
      }
      const int64_t h_end = std::min(heads, e - t * heads);
      for (int64_t h = std::max<int64_t>(0, b - t * heads); h < h_end; ++h) {
        const Rows& r = h < q_heads ? q : k;
        const int64_t hh = h < q_heads ? h : h - q_heads;
        T* x = reinterpret_cast<T*>(r.base + t * r.token_stride_bytes + hh * r.head_stride_bytes);
        if (is_neox) rotate_neox(x, cos, sin, half);
        else rotate_gptj(x, cos2, sin2, rot);
      }
    }
  });
}

template <class P>
void check_positions_in_range(const TensorView& positions, int64_t max_position) {
  const P* p = positions.ptr<P>();
  const int64_t n = positions.size(0), s = positions.stride(0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = int64_t(p[i * s]);
    PIO_CHECK(v >= 0 && v < max_position, "positions[", i, "] = ", v, " is out of range [0, ", max_position,
              ") of cos_sin_cache");
  }
}

void check_heads(const TensorView& t, const char* name, int64_t tokens, int64_t head_dim) {
  check_cpu(t, name);
  check_not_null(t, name);
  PIO_CHECK(t.ndim == 3, name, " must be 3-D [num_tokens, num_heads, head_dim], got shape ", t.shape_str());
  check_dim(t, name, 0, tokens);
  check_dim(t, name, 2, head_dim);
  check_last_dim_contiguous(t, name);
  PIO_CHECK(t.size(1) <= 1 || t.stride(1) == head_dim, name, ": heads must be contiguous within a token");
  PIO_CHECK(t.size(0) <= 1 || t.stride(0) >= t.size(1) * head_dim, name, ": tokens must not overlap");
}

}  // namespace

// Public entry points (declared in cpu_ops.h, called by the fused decode step in csrc/decoder too).
void rotary_embedding(const TensorView& positions, const TensorView& query, const std::optional<TensorView>& key,
                      const TensorView& cache, bool is_neox) {
  check_float(query, "query");
  PIO_CHECK(query.ndim == 3, "query must be 3-D [num_tokens, num_heads, head_dim], got shape ", query.shape_str());
  const int64_t tokens = query.size(0), head_dim = query.size(2);
  check_heads(query, "query", tokens, head_dim);
  if (key) {
    check_same_dtype(*key, "key", query, "query");
    check_heads(*key, "key", tokens, head_dim);
  }
  check_cpu(positions, "positions");
  check_not_null(positions, "positions");
  check_ndim(positions, "positions", 1);
  check_dim(positions, "positions", 0, tokens);
  PIO_CHECK(positions.dtype == DType::Int32 || positions.dtype == DType::Int64, "positions must be int32 or int64, got ",
            dtype_name(positions.dtype));
  check_cpu(cache, "cos_sin_cache");
  check_not_null(cache, "cos_sin_cache");
  check_ndim(cache, "cos_sin_cache", 2);
  check_contiguous(cache, "cos_sin_cache");
  PIO_CHECK(cache.dtype == query.dtype || cache.dtype == DType::Float32, "cos_sin_cache must be float32 or ",
            dtype_name(query.dtype), ", got ", dtype_name(cache.dtype));
  const int64_t rot = cache.size(1);
  PIO_CHECK(rot > 0 && rot % 2 == 0 && rot <= head_dim, "cos_sin_cache.shape[1] (rotary_dim) must be even, positive and <= ",
            "head_dim ", head_dim, ", got ", rot);
  // Every position is checked before anything is written: a bad one leaves query and key as they were.
  if (positions.dtype == DType::Int32) check_positions_in_range<int32_t>(positions, cache.size(0));
  else check_positions_in_range<int64_t>(positions, cache.size(0));

  PIO_DISPATCH_FLOAT(query.dtype, "rotary_embedding", [&] {
    auto run = [&](auto cache_tag) {
      using C = decltype(cache_tag);
      if (positions.dtype == DType::Int32) rotary_impl<scalar_t, C, int32_t>(positions, query, key, cache, is_neox);
      else rotary_impl<scalar_t, C, int64_t>(positions, query, key, cache, is_neox);
    };
    if (cache.dtype == DType::Float32) run(float{});
    else run(scalar_t{});
  });
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(rotary_embedding) {
  namespace py = pybind11;
  m.def("rotary_embedding", &pio::cpu::rotary_embedding, py::arg("positions"), py::arg("query"), py::arg("key"),
        py::arg("cos_sin_cache"), py::arg("is_neox"), PIO_NOGIL,
        "in place: rotate query [tokens, heads, head_dim] and key (or None) by cos_sin_cache[positions]");
}
