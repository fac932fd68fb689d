// The CPU kernels' public C++ entry points, for code that composes them (csrc/decoder, the fused decode step).
// Each is defined in its own file of this folder and bound to Python there; each validates its
// arguments and raises pio::ArgumentError (ValueError in Python) naming the bad one. Callers run
// them without the GIL. Layouts are documented at the definitions and in python/inference_pio/ops.
#pragma once
#include <cstdint>
#include <optional>

#include "pio/tensor_view.h"

namespace pio::cpu {

// out [M, N] = x [M, K] . weight [N, K]^T (+ bias [N]); linear.cpp.
void linear(const TensorView& out, const TensorView& x, const TensorView& weight, const std::optional<TensorView>& bias);

// out [rows, hidden] = x / rms(x) * weight; rms_norm.cpp.
void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, double eps);

// In place: residual += x, then x = rms_norm(residual) * weight; rms_norm.cpp.
void fused_add_rms_norm(const TensorView& x, const TensorView& residual, const TensorView& weight, double eps);

// In place on query [T, H, D] and key [T, KVH, D] (or none): RoPE from cos_sin_cache [max_pos, rot]; rotary_embedding.cpp.
void rotary_embedding(const TensorView& positions, const TensorView& query, const std::optional<TensorView>& key,
                      const TensorView& cos_sin_cache, bool is_neox);

// key/value [T, KVH, D] into key/value_cache [blocks, block_size, KVH, D] at slot_mapping [T]; kv_cache.cpp.
void reshape_and_cache(const TensorView& key, const TensorView& value, const TensorView& key_cache,
                       const TensorView& value_cache, const TensorView& slot_mapping);

// out [S, H, D]: one query per sequence over its paged keys; paged_decode_attention.cpp.
void paged_decode_attention(const TensorView& out, const TensorView& query, const TensorView& key_cache,
                            const TensorView& value_cache, const TensorView& block_tables, const TensorView& context_lens,
                            double scale, std::optional<int64_t> sliding_window, std::optional<int64_t> max_context_len,
                            int64_t partition_tokens);

// out [rows, d] = silu(x[:, :d]) * x[:, d:]; activation.cpp.
void silu_and_mul(const TensorView& out, const TensorView& x);

// The quantized kernels are declared weak: should a build lack their C++ entry points (a kernel
// file keeping them internal), these resolve to null instead of failing the module's import, and
// quantized_kernels_callable() says so (DecoderPlan then refuses quantized weights by name).

// How quantized_linear treats its input x (quantized_linear.cpp, quantized_int16.h): exact float32
// products, or x rounded to int8 / int16 blocks of 32 and integer dot products. The values are
// the Python API's (ops.quantized_linear.INPUT_MODES); 1 = int8 keeps the old `true` meaning.
enum InputMode : int { kInputExact = 0, kInputInt8 = 1, kInputInt16 = 2 };

// out [M, N] = x [M, K] . dequant(weight)[N, K]^T (+ bias [N]), weight uint8 GGUF blocks of ggml type
// qtype; input_mode: an InputMode; quantized_linear.cpp.
__attribute__((weak)) void quantized_linear(const TensorView& out, const TensorView& x, const TensorView& weight,
                                            int qtype, const std::optional<TensorView>& bias, int input_mode);

// out [T, hidden] = dequant(weight)[ids [T]], weight uint8 GGUF blocks; quantized_embedding.cpp.
__attribute__((weak)) void quantized_embedding(const TensorView& out, const TensorView& ids, const TensorView& weight,
                                               int qtype);

inline bool quantized_kernels_callable() { return &quantized_linear != nullptr && &quantized_embedding != nullptr; }

}  // namespace pio::cpu
