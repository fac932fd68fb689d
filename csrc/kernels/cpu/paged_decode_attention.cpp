// Paged decode attention: one query token per sequence against its paged KV cache.
//   query        [num_seqs, num_heads, head_dim]        (head_dim contiguous, other strides free)
//   key/value    [num_blocks, block_size, num_kv_heads, head_dim] contiguous, query's dtype
//   block_tables [num_seqs, max_blocks_per_seq] int32   (position t lives in block
//                 block_tables[s][t / block_size] at offset t % block_size)
//   context_lens [num_seqs] int32                        (the query sits at position ctx - 1)
//   out          [num_seqs, num_heads, head_dim]         query's dtype
// Work unit: (sequence, key range), every head. The cache keeps all kv heads of a token in one
// row, so a unit streams whole rows in order (what the hardware prefetchers follow) and keeps
// GQA reuse: each kv head's slice of a row serves the group of query heads that share it. Keys
// go in chunks of kChunk (scores, softmax, values) with an online softmax across chunks. Long
// contexts are split into ranges (split-K) so every thread works even at batch 1; their
// partial results are merged at the end.
#include <optional>
#include <vector>

#include "attention_common.h"
#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"

namespace pio::cpu {
namespace {

constexpr int64_t kChunk = 128;         // keys per scores buffer
constexpr int64_t kTile = 16;           // keys whose rows every head passes over while they sit in L1
constexpr int64_t kMinPartition = 128;  // shorter split-K ranges cost more to merge than they save
constexpr int64_t kUnitOverhead = 16;   // per-unit fixed cost, in keys, for balancing
constexpr int64_t kMinWorkPerThread = 1 << 17;  // keys x heads x head_dim per extra thread

struct Problem {
  int64_t num_seqs, num_heads, num_kv_heads, group, head_dim;
  int64_t num_blocks, block_size, max_blocks;
  int64_t q_s0, q_s1, o_s0, o_s1, bt_s0, cl_s0;
  float scale;
  std::optional<int64_t> sliding_window;
};

struct Unit {
  int64_t seq, begin, end;
  int64_t partial = -1;  // first of its num_heads partial rows in scratch; -1: writes out directly
  int64_t n_parts = 1;   // ranges its sequence was split into
};

// Per-thread buffers, reused across calls: no allocation per call once warm.
struct Workspace {
  std::vector<float> q, scores, acc;
  std::vector<const void*> k_rows, v_rows;
  std::vector<SoftmaxState> state;
};
Workspace& workspace() {
  static thread_local Workspace ws;
  return ws;
}

int64_t first_key(const Problem& p, int64_t ctx) {
  return p.sliding_window ? std::max<int64_t>(0, ctx - *p.sliding_window) : 0;
}

template <class T>
void attend_unit(const Problem& p, const Unit& u, const T* query, const T* kc, const T* vc, const int32_t* tables,
                 T* out, float* partials) {
  const int64_t H = p.num_heads, G = p.group, D = p.head_dim, row_stride = p.num_kv_heads * D;
  Workspace& ws = workspace();
  ws.q.resize(H * D);
  ws.scores.resize(H * kChunk);
  ws.acc.assign(H * D, 0.0f);
  ws.k_rows.resize(kChunk);
  ws.v_rows.resize(kChunk);
  ws.state.assign(H, SoftmaxState{});
  using Q = typename QueryRow<T>::type;
  Q* q = reinterpret_cast<Q*>(ws.q.data());  // sized for float32, the widest row type
  float* scores = ws.scores.data();
  float* acc = ws.acc.data();
  for (int64_t h = 0; h < H; ++h) load_query_row(q + h * D, query + u.seq * p.q_s0 + h * p.q_s1, D);
  const int32_t* table = tables + u.seq * p.bt_s0;
  auto k_rows = reinterpret_cast<const T**>(ws.k_rows.data());
  auto v_rows = reinterpret_cast<const T**>(ws.v_rows.data());
  for (int64_t c0 = u.begin; c0 < u.end; c0 += kChunk) {
    const int64_t n = std::min(kChunk, u.end - c0);
    int64_t blk = c0 / p.block_size, off = c0 % p.block_size;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t row = (int64_t(table[blk]) * p.block_size + off) * row_stride;
      k_rows[k] = kc + row;
      v_rows[k] = vc + row;
      if (++off == p.block_size) off = 0, ++blk;
    }
    // Query heads [kvh*G, kvh*G + G) read kv head kvh at element offset kvh*D of each row.
    const int64_t row_bytes = row_stride * int64_t(sizeof(T));
    for (int64_t t = 0; t < n; t += kTile) {
      // The next tile's key rows, or the first value rows once the keys run out.
      if (t + kTile < n) prefetch_rows(k_rows + t + kTile, std::min(kTile, n - t - kTile), row_bytes);
      else prefetch_rows(v_rows, std::min(kTile, n), row_bytes);
      for (int64_t kvh = 0; kvh < p.num_kv_heads; ++kvh)
        dot_rows(scores + kvh * G * kChunk + t, kChunk, q + kvh * G * D, D, G, k_rows + t, kvh * D, std::min(kTile, n - t), D);
    }
    for (int64_t h = 0; h < H; ++h) softmax_chunk(ws.state[h], scores + h * kChunk, n, p.scale, acc + h * D, D);
    for (int64_t t = 0; t < n; t += kTile) {
      if (t + kTile < n) prefetch_rows(v_rows + t + kTile, std::min(kTile, n - t - kTile), row_bytes);
      for (int64_t kvh = 0; kvh < p.num_kv_heads; ++kvh)
        accumulate_rows(acc + kvh * G * D, D, scores + kvh * G * kChunk + t, kChunk, G, v_rows + t, kvh * D,
                        std::min(kTile, n - t), D);
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    if (u.partial < 0) {
      convert_row(out + u.seq * p.o_s0 + h * p.o_s1, acc + h * D, D, 1.0f / ws.state[h].sum);
    } else {
      float* dst = partials + (u.partial + h) * partial_stride(D);
      dst[0] = ws.state[h].max;
      dst[1] = ws.state[h].sum;
      std::memcpy(dst + 2, acc + h * D, sizeof(float) * D);
    }
  }
}

// Validates the per-sequence metadata (before any compute) and returns the key range sizes.
void check_metadata(const Problem& p, const int32_t* tables, const int32_t* lens, std::optional<int64_t> max_context_len,
                    std::vector<int64_t>& begins, std::vector<int64_t>& ends) {
  const int64_t capacity = p.max_blocks * p.block_size;
  begins.resize(p.num_seqs);
  ends.resize(p.num_seqs);
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t ctx = lens[s * p.cl_s0];
    PIO_CHECK(ctx >= 1, "context_lens[", s, "] must be >= 1, got ", ctx);
    PIO_CHECK(ctx <= capacity, "context_lens[", s, "] = ", ctx, " exceeds the block table's capacity of ", capacity,
              " tokens (", p.max_blocks, " blocks of ", p.block_size, ")");
    PIO_CHECK(!max_context_len || ctx <= *max_context_len, "context_lens[", s, "] = ", ctx, " exceeds max_context_len = ",
              *max_context_len);
    const int64_t begin = first_key(p, ctx);
    for (int64_t b = begin / p.block_size; b <= (ctx - 1) / p.block_size; ++b) {
      const int64_t blk = tables[s * p.bt_s0 + b];
      PIO_CHECK(blk >= 0 && blk < p.num_blocks, "block_tables[", s, "][", b, "] = ", blk, " is outside [0, ", p.num_blocks,
                ") (the key cache's num_blocks)");
    }
    begins[s] = begin;
    ends[s] = ctx;
  }
}

template <class T>
void run(const Problem& p, const TensorView& out, const TensorView& query, const TensorView& key_cache,
         const TensorView& value_cache, const int32_t* tables, const std::vector<int64_t>& begins,
         const std::vector<int64_t>& ends, int64_t partition_tokens) {
  const int threads = num_threads();
  int64_t total = 0;
  for (int64_t s = 0; s < p.num_seqs; ++s) total += ends[s] - begins[s];
  // Split-K when the sequences are too few or too uneven to share out whole.
  int64_t part = partition_tokens;
  if (part <= 0) part = threads > 1 ? std::max(kMinPartition, (total + 4 * threads - 1) / (4 * threads)) : total + 1;

  // The calling thread's buffers, reused across calls; bound to references because worker
  // threads naming a thread_local directly would see their own (empty) copies.
  static thread_local std::vector<Unit> units_buffer;
  static thread_local std::vector<float> partials_buffer;
  static thread_local std::vector<int64_t> cumulative_buffer;
  std::vector<Unit>& units = units_buffer;
  std::vector<float>& partials = partials_buffer;
  std::vector<int64_t>& cumulative = cumulative_buffer;
  units.clear();
  int64_t n_partials = 0;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t len = ends[s] - begins[s];
    const int64_t n_parts = (len + part - 1) / part, step = (len + n_parts - 1) / n_parts;
    for (int64_t i = 0; i < n_parts; ++i) {
      const int64_t b = begins[s] + i * step;
      units.push_back(Unit{s, b, std::min(ends[s], b + step), n_parts > 1 ? n_partials : -1, n_parts});
      if (n_parts > 1) n_partials += p.num_heads;
    }
  }
  const int64_t stride = partial_stride(p.head_dim);
  partials.resize(n_partials * stride);
  // Called by a whole team (the fused decode step), every thread has built the same units; the
  // partials must be one buffer that all of them write and read: thread 0's.
  float* partials_data = n_partials > 0 ? team_shared(partials.data()) : nullptr;

  // Share units out by cumulative work, not by count: contexts differ in length.
  cumulative.resize(units.size() + 1);
  cumulative[0] = 0;
  for (size_t i = 0; i < units.size(); ++i) cumulative[i + 1] = cumulative[i] + units[i].end - units[i].begin + kUnitOverhead;
  const int64_t work = cumulative.back();
  const int64_t products = total * p.num_heads * p.head_dim;
  const int64_t n_chunks =
      std::min<int64_t>({int64_t(threads), int64_t(units.size()), std::max<int64_t>(1, products / kMinWorkPerThread)});
  const T* q = query.ptr<T>();
  const T* kc = key_cache.ptr<T>();
  const T* vc = value_cache.ptr<T>();
  T* o = out.ptr<T>();
  parallel_for(n_chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      // The units whose work starts in [c, c + 1) * work / n_chunks.
      const int64_t lo = c * work / n_chunks, hi = (c + 1) * work / n_chunks;
      auto first = std::lower_bound(cumulative.begin(), cumulative.end() - 1, lo);
      auto last = std::lower_bound(cumulative.begin(), cumulative.end() - 1, hi);
      for (auto it = first; it != last; ++it) attend_unit(p, units[it - cumulative.begin()], q, kc, vc, tables, o, partials_data);
    }
  });
  if (n_partials == 0) return;

  // Merge each split sequence's partials: [part][head] rows, starting at its first unit's.
  parallel_for(int64_t(units.size()), 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const Unit& u = units[i];
      if (u.partial < 0 || (i > 0 && units[i - 1].seq == u.seq)) continue;
      for (int64_t h = 0; h < p.num_heads; ++h)
        merge_partials(o + u.seq * p.o_s0 + h * p.o_s1, partials_data + (u.partial + h) * stride, p.num_heads * stride,
                       u.n_parts, p.head_dim, p.scale);
    }
  });
}

}  // namespace

// Public entry points (declared in cpu_ops.h, called by the fused decode step in csrc/decoder too).
void paged_decode_attention(const TensorView& out, const TensorView& query, const TensorView& key_cache,
                            const TensorView& value_cache, const TensorView& block_tables, const TensorView& context_lens,
                            double scale, std::optional<int64_t> sliding_window, std::optional<int64_t> max_context_len,
                            int64_t partition_tokens) {
  check_cpu(query, "query");
  check_float(query, "query");
  check_ndim(query, "query", 3);
  check_last_dim_contiguous(query, "query");
  const int64_t S = query.size(0), H = query.size(1), D = query.size(2);
  for (auto [t, name] : {std::pair{&key_cache, "key_cache"}, std::pair{&value_cache, "value_cache"}}) {
    check_cpu(*t, name);
    check_ndim(*t, name, 4);
    check_same_dtype(*t, name, query, "query");
    check_contiguous(*t, name);
    check_dim(*t, name, 3, D);
  }
  for (int d = 0; d < 3; ++d) check_dim(value_cache, "value_cache", d, key_cache.size(d));
  const int64_t Hkv = key_cache.size(2);
  PIO_CHECK(Hkv >= 1 && H >= 1 && H % Hkv == 0, "num_heads (", H, ") must be a positive multiple of num_kv_heads (", Hkv, ")");
  PIO_CHECK(D % 16 == 0 && D >= 16 && D <= kMaxHeadDim, "head_dim must be a multiple of 16 in [16, ", kMaxHeadDim, "], got ", D);
  check_cpu(out, "out");
  check_ndim(out, "out", 3);
  check_same_dtype(out, "out", query, "query");
  for (int d = 0; d < 3; ++d) check_dim(out, "out", d, query.size(d));
  check_last_dim_contiguous(out, "out");
  check_cpu(block_tables, "block_tables");
  check_dtype(block_tables, "block_tables", DType::Int32);
  check_ndim(block_tables, "block_tables", 2);
  check_dim(block_tables, "block_tables", 0, S);
  check_last_dim_contiguous(block_tables, "block_tables");
  check_cpu(context_lens, "context_lens");
  check_dtype(context_lens, "context_lens", DType::Int32);
  check_ndim(context_lens, "context_lens", 1);
  check_dim(context_lens, "context_lens", 0, S);
  PIO_CHECK(key_cache.size(1) >= 1, "key_cache block_size must be >= 1, got shape ", key_cache.shape_str());
  PIO_CHECK(std::isfinite(scale) && scale > 0, "scale must be a positive finite float, got ", scale);
  PIO_CHECK(!sliding_window || *sliding_window >= 1, "sliding_window must be >= 1 or None, got ", *sliding_window);
  PIO_CHECK(!max_context_len || *max_context_len >= 1, "max_context_len must be >= 1 or None, got ", *max_context_len);
  PIO_CHECK(partition_tokens >= 0, "partition_tokens must be >= 0 (0: automatic), got ", partition_tokens);
  if (S == 0) return;

  Problem p{S, H, Hkv, H / Hkv, D, key_cache.size(0), key_cache.size(1), block_tables.size(1),
            query.stride(0), query.stride(1), out.stride(0), out.stride(1), block_tables.stride(0), context_lens.stride(0),
            float(scale), sliding_window};
  const int32_t* tables = block_tables.ptr<int32_t>();
  static thread_local std::vector<int64_t> begins, ends;
  check_metadata(p, tables, context_lens.ptr<int32_t>(), max_context_len, begins, ends);
  PIO_DISPATCH_FLOAT(query.dtype, "paged_decode_attention", [&] {
    run<scalar_t>(p, out, query, key_cache, value_cache, tables, begins, ends, partition_tokens);
  });
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(paged_decode_attention) {
  namespace py = pybind11;
  m.def("paged_decode_attention", &pio::cpu::paged_decode_attention, py::arg("out"), py::arg("query"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("block_tables"), py::arg("context_lens"), py::arg("scale"),
        py::arg("sliding_window") = py::none(), py::arg("max_context_len") = py::none(), py::arg("partition_tokens") = 0,
        PIO_NOGIL,
        "out[s, h] = softmax(q[s, h] . K[s]^T * scale) V[s] over the sequence's paged keys; "
        "partition_tokens > 0 forces split-K ranges of that many keys (tests), 0 chooses");
}
