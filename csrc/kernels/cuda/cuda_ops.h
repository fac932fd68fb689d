// The CUDA kernels' entry points (one .cu file per op family), bound in csrc/bindings/cuda_module.cpp.
// Each validates its tensor views (ValueError naming the argument), runs on the views' stream and
// device, and checks its launches (RuntimeError).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "pio/tensor_view.h"

namespace pio::cuda {

void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, double eps);
void fused_add_rms_norm(const TensorView& x, const TensorView& residual, const TensorView& weight, double eps);

void silu_and_mul(const TensorView& out, const TensorView& x);
void gelu_and_mul(const TensorView& out, const TensorView& x, const std::string& approximate);

void rotary_embedding(const TensorView& positions, const TensorView& query, const std::optional<TensorView>& key,
                      const TensorView& cos_sin_cache, bool is_neox);

void reshape_and_cache(const TensorView& key, const TensorView& value, const TensorView& key_cache,
                       const TensorView& value_cache, const TensorView& slot_mapping);

void paged_decode_attention(const TensorView& out, const TensorView& query, const TensorView& key_cache,
                            const TensorView& value_cache, const TensorView& block_tables,
                            const TensorView& context_lens, double scale, std::optional<int64_t> sliding_window,
                            std::optional<int64_t> max_context_len);

void prefill_attention(const TensorView& out, const TensorView& query, const TensorView& key, const TensorView& value,
                       const TensorView& cu_seqlens_q, const TensorView& cu_seqlens_k, bool causal, double scale,
                       std::optional<int64_t> sliding_window, std::optional<TensorView> block_tables,
                       int64_t max_seqlen_q);

}  // namespace pio::cuda
