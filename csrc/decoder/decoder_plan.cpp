// One decode step of a Llama-family decoder in C++: embedding -> every layer (norm, fused qkv,
// optional per-head q/k RMSNorm, RoPE, KV-cache write, paged decode attention, o_proj, add + norm,
// fused gate_up, SiLU-and-mul, down) -> final norm -> LM head, with the GIL released and no
// allocation once warm. It composes the op kernels of csrc/kernels/cpu (cpu_ops.h); this folder
// holds the model-level step, the kernels folder ops only.
//
// Why: at batch 1 a small model's decode step is a few hundred kernel calls of microseconds each;
// calling them from Python costs about as much as the kernels themselves. A DecoderPlan is built
// once per model from views of every weight (Python keeps the tensors alive) and runs the whole
// step over activation buffers it owns (grown only when the batch grows).
//
// Layouts (T = tokens of the step = sequences, one token each; activations in the model dtype):
//   residual, hidden [T, hidden]; qkv [T, (H + 2 KVH) D] (q heads, then k, then v);
//   attn [T, H D]; gate_up [T, 2 I] (gate rows first); act [T, I]; logits [T, vocab].
// Each layer's input norm is fused with the residual add of the previous block's output, like
// the Python model; the first layer's has nothing to add. Projections and the embedding are dense
// or GGUF blocks (quantized_linear / quantized_embedding), and a projection may be several row
// slices each writing its own output columns. RoPE rotates the first cos_sin_cache.shape[1] dims
// of each head (partial rotary when that is less than head_dim).
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "decoder/arena.h"
#include "decoder/plan_weight.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/parallel.h"
#include "pio/pybind_tensor_view.h"

namespace pio::cpu {
namespace {

using decoder::Arena;
using decoder::make_view;
using decoder::PlanWeight;
using decoder::rows_view;
using decoder::WeightPart;

// One decoder layer's weights and attention settings.
struct PlanLayer {
  TensorView input_norm;
  double input_eps;
  PlanWeight qkv, o_proj;
  TensorView post_norm;
  double post_eps;
  PlanWeight gate_up, down;
  double scale;
  std::optional<int64_t> sliding_window;
  // Per-head RMSNorm weights [head_dim] of q and k after the projection, before RoPE (Qwen3).
  std::optional<TensorView> q_norm, k_norm;
  double qk_norm_eps = 1e-6;

  bool has_head_norm() const { return q_norm.has_value() || k_norm.has_value(); }
};

void check_norm(const TensorView& w, const char* name, DType dtype, int64_t size, double eps) {
  check_cpu(w, name);
  check_not_null(w, name);
  PIO_CHECK(w.ndim == 1 && w.size(0) == size, name, " must have shape [", size, "], got ", w.shape_str());
  PIO_CHECK(w.dtype == dtype || w.dtype == DType::Float32, name, " must be float32 or ", dtype_name(dtype), ", got ",
            dtype_name(w.dtype));
  check_contiguous(w, name);
  PIO_CHECK(eps > 0, name, ": eps must be positive, got ", eps);
}

class DecoderPlan {
 public:
  DecoderPlan(int dtype_code, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, bool is_neox,
              PlanWeight embedding, std::vector<PlanLayer> layers, const TensorView& final_norm, double final_eps,
              PlanWeight lm_head, const TensorView& cos_sin_cache, std::optional<int64_t> rotary_dim)
      : H_(num_heads), KVH_(num_kv_heads), D_(head_dim), is_neox_(is_neox), embedding_(std::move(embedding)),
        layers_(std::move(layers)), final_norm_(final_norm), final_eps_(final_eps), lm_head_(std::move(lm_head)),
        cos_sin_(cos_sin_cache) {
    PIO_CHECK(dtype_code >= 0 && dtype_code <= 2, "dtype must be float32, float16 or bfloat16 (codes 0-2), got code ",
              dtype_code);
    dtype_ = DType(dtype_code);
    PIO_CHECK(H_ >= 1 && KVH_ >= 1 && H_ % KVH_ == 0, "num_heads (", H_, ") must be a positive multiple of num_kv_heads (",
              KVH_, ")");
    PIO_CHECK(D_ >= 1, "head_dim must be positive, got ", D_);
    PIO_CHECK(!layers_.empty(), "layers must not be empty");
    PIO_CHECK(embedding_.parts.size() == 1, "embedding must be one table [vocab, hidden], got ", embedding_.parts.size(),
              " parts");
    vocab_in_ = embedding_.rows();
    hidden_ = embedding_.cols();
    PIO_CHECK(hidden_ >= 1 && vocab_in_ >= 1, "embedding must be [vocab, hidden] with both positive, got [", vocab_in_,
              ", ", hidden_, "]");
    embedding_.check("embedding", dtype_, vocab_in_, hidden_);
    PIO_CHECK(!embedding_.parts[0].bias, "embedding must have no bias");
    intermediate_ = layers_[0].gate_up.rows() / 2;
    PIO_CHECK(intermediate_ >= 1, "layers[0].gate_up must have a positive even number of rows [2 * intermediate, hidden]");
    for (size_t i = 0; i < layers_.size(); ++i) {
      const PlanLayer& l = layers_[i];
      const std::string p = "layers[" + std::to_string(i) + "].";
      auto name = [&](const char* n) { return p + n; };
      check_norm(l.input_norm, name("input_norm").c_str(), dtype_, hidden_, l.input_eps);
      check_norm(l.post_norm, name("post_norm").c_str(), dtype_, hidden_, l.post_eps);
      l.qkv.check(name("qkv").c_str(), dtype_, q_size() + 2 * kv_size(), hidden_);
      l.o_proj.check(name("o_proj").c_str(), dtype_, hidden_, q_size());
      l.gate_up.check(name("gate_up").c_str(), dtype_, 2 * intermediate_, hidden_);
      l.down.check(name("down").c_str(), dtype_, hidden_, intermediate_);
      PIO_CHECK(l.scale > 0, p, "scale must be positive, got ", l.scale);
      PIO_CHECK(!l.sliding_window || *l.sliding_window >= 1, p, "sliding_window must be >= 1 or None, got ",
                *l.sliding_window);
      if (l.q_norm) check_norm(*l.q_norm, name("q_norm").c_str(), dtype_, D_, l.qk_norm_eps);
      if (l.k_norm) check_norm(*l.k_norm, name("k_norm").c_str(), dtype_, D_, l.qk_norm_eps);
    }
    check_norm(final_norm_, "final_norm", dtype_, hidden_, final_eps_);
    lm_head_.check("lm_head", dtype_, lm_head_.rows(), hidden_);
    check_cpu(cos_sin_, "cos_sin_cache");
    check_not_null(cos_sin_, "cos_sin_cache");
    check_ndim(cos_sin_, "cos_sin_cache", 2);
    check_contiguous(cos_sin_, "cos_sin_cache");
    PIO_CHECK(cos_sin_.size(1) >= 2 && cos_sin_.size(1) % 2 == 0 && cos_sin_.size(1) <= D_,
              "cos_sin_cache.shape[1] (rotary_dim) must be even, positive and <= head_dim ", D_, ", got ",
              cos_sin_.shape_str());
    PIO_CHECK(!rotary_dim || *rotary_dim == cos_sin_.size(1), "rotary_dim ", rotary_dim.value_or(0),
              " disagrees with cos_sin_cache ", cos_sin_.shape_str(), " (its width is the rotated dims)");
  }

  // The per-layer caches [num_blocks, block_size, KVH, D], checked here once.
  void set_kv_caches(const std::vector<TensorView>& key_caches, const std::vector<TensorView>& value_caches) {
    PIO_CHECK(key_caches.size() == layers_.size() && value_caches.size() == layers_.size(), "expected ", layers_.size(),
              " key and value caches (one per layer), got ", key_caches.size(), " and ", value_caches.size());
    for (size_t i = 0; i < layers_.size(); ++i) {
      for (const TensorView* t : {&key_caches[i], &value_caches[i]}) {
        const std::string name = (t == &key_caches[i] ? "key_caches[" : "value_caches[") + std::to_string(i) + "]";
        check_cpu(*t, name.c_str());
        check_not_null(*t, name.c_str());
        PIO_CHECK(t->ndim == 4 && t->size(2) == KVH_ && t->size(3) == D_, name, " must be [num_blocks, block_size, ", KVH_,
                  ", ", D_, "], got ", t->shape_str());
        PIO_CHECK(t->dtype == dtype_, name, " must be ", dtype_name(dtype_), ", got ", dtype_name(t->dtype));
        check_contiguous(*t, name.c_str());
      }
      PIO_CHECK(value_caches[i].size(0) == key_caches[i].size(0) && value_caches[i].size(1) == key_caches[i].size(1),
                "value_caches[", i, "] must have the shape of key_caches[", i, "]");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    key_caches_ = key_caches;
    value_caches_ = value_caches;
  }

  // One decode step: input_ids [T] int64, positions [T] int32/int64, slot_mapping [T],
  // block_tables [T, max_blocks] int32, context_lens [T] int32 -> logits [T, vocab] (written).
  void run(const TensorView& input_ids, const TensorView& positions, const TensorView& slot_mapping,
           const TensorView& block_tables, const TensorView& context_lens, std::optional<int64_t> max_context_len,
           const TensorView& logits) {
    std::lock_guard<std::mutex> lock(mutex_);
    PIO_CHECK(!key_caches_.empty(), "set_kv_caches must be called before run");
    check_cpu(input_ids, "input_ids");
    check_not_null(input_ids, "input_ids");
    check_ndim(input_ids, "input_ids", 1);
    check_dtype(input_ids, "input_ids", DType::Int64);
    const int64_t T = input_ids.size(0);
    PIO_CHECK(T <= 1 || input_ids.stride(0) == 1, "input_ids must be contiguous, got stride ", input_ids.stride(0));
    check_cpu(logits, "logits");
    check_not_null(logits, "logits");
    check_ndim(logits, "logits", 2);
    PIO_CHECK(logits.dtype == dtype_, "logits must be ", dtype_name(dtype_), ", got ", dtype_name(logits.dtype));
    check_dim(logits, "logits", 0, T);
    check_dim(logits, "logits", 1, lm_head_.rows());
    if (T == 0) return;
    // Everything else (positions, slots, block tables, context lengths) is checked by the kernels
    // of the first layer before they write anything the step does not own.
    const int64_t* ids = input_ids.ptr<int64_t>();
    for (int64_t t = 0; t < T; ++t) {
      const int64_t id = ids[t];
      PIO_CHECK(id >= 0 && id < vocab_in_, "input_ids[", t, "] = ", id, " is out of range [0, ", vocab_in_, ")");
    }

    const DType dt = dtype_;
    const int64_t es = dtype_size(dt), qkv_n = q_size() + 2 * kv_size();
    auto bytes = [&](int64_t cols) { return size_t((T * cols * es + 63) / 64 * 64); };
    const size_t sizes[] = {bytes(hidden_), bytes(hidden_), bytes(qkv_n), bytes(q_size()), bytes(2 * intermediate_),
                            bytes(intermediate_)};
    size_t total = 0;
    for (size_t s : sizes) total += s;
    char* base = static_cast<char*>(arena_.reserve(total));
    char* at[6];
    for (int i = 0; i < 6; ++i) at[i] = base, base += sizes[i];
    const TensorView residual = rows_view(at[0], dt, T, hidden_), hidden = rows_view(at[1], dt, T, hidden_);
    const TensorView qkv = rows_view(at[2], dt, T, qkv_n), attn = make_view(at[3], dt, {T, H_, D_}, {H_ * D_, D_, 1});
    const TensorView attn_rows = rows_view(at[3], dt, T, q_size());
    const TensorView gate_up = rows_view(at[4], dt, T, 2 * intermediate_), act = rows_view(at[5], dt, T, intermediate_);
    const TensorView query = make_view(at[2], dt, {T, H_, D_}, {qkv_n, D_, 1});
    const TensorView key = make_view(at[2] + q_size() * es, dt, {T, KVH_, D_}, {qkv_n, D_, 1});
    const TensorView value = make_view(at[2] + (q_size() + kv_size()) * es, dt, {T, KVH_, D_}, {qkv_n, D_, 1});

    // The whole step is one OpenMP region (thread start-up once, not per kernel): projections are
    // shared out by output rows (team_private, then a barrier), the small ops are called by all
    // threads together and split inside (team_collective, ending in their own barrier).
    // With one_team_ off (for benchmarks: the cost it saves) the same body runs as a team of one
    // that is no team: every kernel opens its own OpenMP region, as when called from Python.
    const WeightPart& table = embedding_.parts[0];
    auto step = [&](Team& team, int rank) {
      const int nt = team.size();
      team_private([&] {  // this member's tokens of the embedding
        const int64_t t0 = T * rank / nt, t1 = T * (rank + 1) / nt;
        if (t0 == t1) return;
        if (table.qtype < 0) {
          const char* rows = static_cast<const char*>(table.weight.data);
          for (int64_t t = t0; t < t1; ++t)
            std::memcpy(at[0] + t * hidden_ * es, rows + ids[t] * hidden_ * es, size_t(hidden_ * es));
        } else {
          TensorView out = rows_view(at[0] + t0 * hidden_ * es, dt, t1 - t0, hidden_), some_ids = input_ids;
          some_ids.data = const_cast<int64_t*>(ids + t0);
          some_ids.shape[0] = t1 - t0;
          quantized_embedding(out, some_ids, table.weight, table.qtype);
        }
      });
      team.barrier();
      auto project = [&](const PlanWeight& w, const TensorView& out, const TensorView& x) {
        team_private([&] { w.apply_share(out, x, rank, nt); });
        team.barrier();
      };
      for (size_t i = 0; i < layers_.size(); ++i) {
        const PlanLayer& l = layers_[i];
        team_collective([&] {
          if (i == 0) rms_norm(hidden, residual, l.input_norm, l.input_eps);
          else fused_add_rms_norm(hidden, residual, l.input_norm, l.input_eps);
        });
        project(l.qkv, qkv, hidden);
        if (l.has_head_norm()) {
          team_private([&] { normalize_heads(l, at[2], T, rank, nt); });
          team.barrier();
        }
        team_collective([&] {
          rotary_embedding(positions, query, key, cos_sin_, is_neox_);
          reshape_and_cache(key, value, key_caches_[i], value_caches_[i], slot_mapping);
        });
        team_collective([&] {
          paged_decode_attention(attn, query, key_caches_[i], value_caches_[i], block_tables, context_lens, l.scale,
                                 l.sliding_window, max_context_len, 0);
        });
        project(l.o_proj, hidden, attn_rows);
        team_collective([&] { fused_add_rms_norm(hidden, residual, l.post_norm, l.post_eps); });
        project(l.gate_up, gate_up, hidden);
        team_collective([&] { silu_and_mul(act, gate_up); });
        project(l.down, hidden, act);
      }
      team_collective([&] { fused_add_rms_norm(hidden, residual, final_norm_, final_eps_); });
      project(lm_head_, logits, hidden);
    };
    if (one_team_) {
      last_barriers_ = run_in_team(num_threads(), step);
    } else {
      Team alone(1);
      step(alone, 0);
      last_barriers_ = 0;
    }
  }

  bool one_team() const { return one_team_; }
  void set_one_team(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    one_team_ = on;
  }
  int64_t last_barriers() const { return last_barriers_; }

  int64_t num_layers() const { return int64_t(layers_.size()); }
  int64_t hidden_size() const { return hidden_; }
  int64_t intermediate_size() const { return intermediate_; }
  int64_t vocab_size() const { return lm_head_.rows(); }

 private:
  int64_t q_size() const { return H_ * D_; }

  // Member `rank` of a team of `threads`: its share of the (token, head) rows that the layer's q/k
  // norms apply to, normalised in place in qkv. One token's q heads, then its k heads, are
  // consecutive rows of head_dim, so a share is at most two row ranges per token.
  void normalize_heads(const PlanLayer& l, char* qkv, int64_t T, int rank, int threads) const {
    const int64_t nq = l.q_norm ? H_ : 0, nk = l.k_norm ? KVH_ : 0, per_token = nq + nk;
    const int64_t b = T * per_token * rank / threads, e = T * per_token * (rank + 1) / threads;
    const int64_t es = dtype_size(dtype_), row_bytes = (q_size() + 2 * kv_size()) * es;
    for (int64_t t = b / per_token; t < T && t * per_token < e; ++t) {
      // Heads [first, first + count) of this token's rows, starting at column col0 of its qkv row.
      auto norm_heads = [&](int64_t first, int64_t count, int64_t col0, const TensorView& w, double eps) {
        const int64_t s = std::max(b, first), f = std::min(e, first + count);
        if (s >= f) return;
        const TensorView heads = rows_view(qkv + t * row_bytes + (col0 + (s - first) * D_) * es, dtype_, f - s, D_);
        rms_norm(heads, heads, w, eps);
      };
      if (nq) norm_heads(t * per_token, nq, 0, *l.q_norm, l.qk_norm_eps);
      if (nk) norm_heads(t * per_token + nq, nk, q_size(), *l.k_norm, l.qk_norm_eps);
    }
  }
  int64_t kv_size() const { return KVH_ * D_; }

  DType dtype_ = DType::Float32;
  int64_t H_, KVH_, D_;
  bool is_neox_;
  PlanWeight embedding_;
  std::vector<PlanLayer> layers_;
  TensorView final_norm_;
  double final_eps_;
  PlanWeight lm_head_;
  TensorView cos_sin_;
  int64_t vocab_in_ = 0, hidden_ = 0, intermediate_ = 0;
  std::vector<TensorView> key_caches_, value_caches_;
  Arena arena_;
  bool one_team_ = true;
  int64_t last_barriers_ = 0;
  std::mutex mutex_;  // the activation buffers serve one step at a time
};

}  // namespace
}  // namespace pio::cpu

PIO_CPU_BINDINGS(decoder_plan) {
  namespace py = pybind11;
  using namespace pio::cpu;
  // module_local: each ISA's module (_cpu_avx2, _cpu_avx512, ...) registers its own copy of these
  // classes; pybind11's shared registry would refuse the second one ("already registered").
  py::class_<PlanWeight>(m, "PlanWeight", py::module_local(), "A projection weight [N, K] for DecoderPlan (a view: keep the tensors alive)")
      .def_static("dense", &PlanWeight::dense, py::arg("weight"), py::arg("bias") = py::none(),
                  "weight [N, K] contiguous in the activation dtype, bias [N] or None")
      .def_static("quantized", &PlanWeight::quantized, py::arg("blocks"), py::arg("qtype"), py::arg("cols"),
                  py::arg("bias") = py::none(), py::arg("input_mode") = 0,
                  "GGUF blocks uint8 [N, cols / block_elems * block_bytes] of ggml type qtype; bias [N] or None "
                  "(activation dtype); input_mode: 0 exact, 1 int8, 2 int16 input blocks, as in quantized_linear")
      .def_static("concat", &PlanWeight::concat, py::arg("parts"),
                  "the weights' output rows one after another (a fused projection kept in parts)")
      .def_property_readonly("shape", [](const PlanWeight& w) { return py::make_tuple(w.rows(), w.cols()); });
  py::class_<PlanLayer>(m, "PlanLayer", py::module_local(), "One decoder layer's weights and attention settings for DecoderPlan")
      .def(py::init([](const pio::TensorView& input_norm, double input_eps, PlanWeight qkv, PlanWeight o_proj,
                       const pio::TensorView& post_norm, double post_eps, PlanWeight gate_up, PlanWeight down,
                       double scale, std::optional<int64_t> sliding_window, std::optional<pio::TensorView> q_norm,
                       std::optional<pio::TensorView> k_norm, double qk_norm_eps) {
             return PlanLayer{input_norm, input_eps, std::move(qkv), std::move(o_proj), post_norm, post_eps,
                              std::move(gate_up), std::move(down), scale, sliding_window, q_norm, k_norm, qk_norm_eps};
           }),
           py::arg("input_norm"), py::arg("input_eps"), py::arg("qkv"), py::arg("o_proj"), py::arg("post_norm"),
           py::arg("post_eps"), py::arg("gate_up"), py::arg("down"), py::arg("scale"), py::arg("sliding_window"),
           py::arg("q_norm") = py::none(), py::arg("k_norm") = py::none(), py::arg("qk_norm_eps") = 1e-6,
           "q_norm / k_norm: optional per-head RMSNorm weights [head_dim] applied to each q / k head after the "
           "qkv projection and before RoPE (Qwen3), both with eps qk_norm_eps");
  py::class_<DecoderPlan>(m, "DecoderPlan", py::module_local(),
                          "A Llama-family decode step in C++ (see csrc/decoder/decoder_plan.cpp); "
                          "holds views: the caller keeps every tensor alive")
      .def(py::init<int, int64_t, int64_t, int64_t, bool, PlanWeight, std::vector<PlanLayer>,
                    const pio::TensorView&, double, PlanWeight, const pio::TensorView&, std::optional<int64_t>>(),
           py::arg("dtype"), py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("is_neox"),
           py::arg("embedding"), py::arg("layers"), py::arg("final_norm"), py::arg("final_eps"), py::arg("lm_head"),
           py::arg("cos_sin_cache"), py::arg("rotary_dim") = py::none(),
           "cos_sin_cache [max_position, rotary_dim]: RoPE rotates the first rotary_dim dims of each head "
           "(partial rotary below head_dim); rotary_dim, when given, must equal its width")
      .def("set_kv_caches", &DecoderPlan::set_kv_caches, py::arg("key_caches"), py::arg("value_caches"))
      .def("run", &DecoderPlan::run, py::arg("input_ids"), py::arg("positions"), py::arg("slot_mapping"),
           py::arg("block_tables"), py::arg("context_lens"), py::arg("max_context_len"), py::arg("logits"), PIO_NOGIL,
           "one decode step into logits [T, vocab]")
      .def_property("one_team", &DecoderPlan::one_team, &DecoderPlan::set_one_team,
                    "run each step as one OpenMP team (default); False: every kernel opens its own region")
      .def_property_readonly("last_barriers", &DecoderPlan::last_barriers,
                             "barriers the last step's team passed (0 with one thread or one_team off)")
      .def_property_readonly("num_layers", &DecoderPlan::num_layers)
      .def_property_readonly("hidden_size", &DecoderPlan::hidden_size)
      .def_property_readonly("intermediate_size", &DecoderPlan::intermediate_size)
      .def_property_readonly("vocab_size", &DecoderPlan::vocab_size);
}
