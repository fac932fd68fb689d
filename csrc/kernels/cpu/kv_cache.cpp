// reshape_and_cache: writes new keys/values into the paged KV cache through a slot mapping.
//   key, value           [num_tokens, num_kv_heads, head_dim]  (last two dims contiguous)
//   key/value_cache      [num_blocks, block_size, num_kv_heads, head_dim] contiguous, key's dtype
//   slot_mapping         [num_tokens] int32 or int64: block * block_size + offset; < 0 skips
// Work is split over (cache, kv head) so each destination row has one writer that visits the
// tokens in order: a repeated slot deterministically keeps the last token's row.
#include <cstring>

#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"

namespace pio::cpu {
namespace {

constexpr int64_t kMinBytesPerThread = 1 << 16;

template <class I>
void check_slots(const I* slots, int64_t n, int64_t stride, int64_t num_slots) {
  for (int64_t t = 0; t < n; ++t) {
    const int64_t s = slots[t * stride];
    PIO_CHECK(s < num_slots, "slot_mapping[", t, "] = ", s, " is outside the cache (num_blocks * block_size = ", num_slots, ")");
  }
}

template <class I>
void copy_rows(const TensorView& key, const TensorView& value, const TensorView& key_cache, const TensorView& value_cache,
               const I* slots, int64_t slot_stride) {
  const int64_t n = key.size(0), heads = key.size(1), d = key.size(2);
  const int64_t row_bytes = d * dtype_size(key.dtype);
  const int64_t units = 2 * heads;  // (cache, kv head)
  const int64_t min_units = std::max<int64_t>(1, kMinBytesPerThread / std::max<int64_t>(1, n * row_bytes));
  parallel_for(units, min_units, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const TensorView& src = u < heads ? key : value;
      const TensorView& dst = u < heads ? key_cache : value_cache;
      const int64_t h = u % heads;
      const char* sp = static_cast<const char*>(src.data) + (h * src.stride(1)) * dtype_size(src.dtype);
      char* dp = static_cast<char*>(dst.data) + h * d * dtype_size(dst.dtype);
      const int64_t src_step = src.stride(0) * dtype_size(src.dtype), dst_step = heads * row_bytes;
      for (int64_t t = 0; t < n; ++t) {
        const int64_t s = slots[t * slot_stride];
        if (s >= 0) std::memcpy(dp + s * dst_step, sp + t * src_step, row_bytes);
      }
    }
  });
}

void check_source(const TensorView& t, const char* name, const TensorView& key) {
  check_cpu(t, name);
  check_ndim(t, name, 3);
  check_same_dtype(t, name, key, "key");
  for (int d = 0; d < 3; ++d) check_dim(t, name, d, key.size(d));
  PIO_CHECK((t.stride(2) == 1 || t.size(2) == 1) && (t.stride(1) == t.size(2) || t.size(1) == 1), name,
            " must have contiguous [num_kv_heads, head_dim] rows, got strides (", t.stride(0), ", ", t.stride(1), ", ",
            t.stride(2), ")");
}

void check_cache(const TensorView& t, const char* name, const TensorView& key) {
  check_cpu(t, name);
  check_ndim(t, name, 4);
  check_same_dtype(t, name, key, "key");
  check_contiguous(t, name);
  check_dim(t, name, 2, key.size(1));
  check_dim(t, name, 3, key.size(2));
}

}  // namespace

// Public entry points (declared in cpu_ops.h, called by the fused decode step in csrc/decoder too).
void reshape_and_cache(const TensorView& key, const TensorView& value, const TensorView& key_cache,
                       const TensorView& value_cache, const TensorView& slot_mapping) {
  check_float(key, "key");
  check_source(key, "key", key);
  check_source(value, "value", key);
  check_cache(key_cache, "key_cache", key);
  check_cache(value_cache, "value_cache", key);
  for (int d = 0; d < 2; ++d) check_dim(value_cache, "value_cache", d, key_cache.size(d));
  check_cpu(slot_mapping, "slot_mapping");
  PIO_CHECK(slot_mapping.dtype == DType::Int32 || slot_mapping.dtype == DType::Int64,
            "slot_mapping must be int32 or int64, got ", dtype_name(slot_mapping.dtype));
  check_ndim(slot_mapping, "slot_mapping", 1);
  check_dim(slot_mapping, "slot_mapping", 0, key.size(0));
  const int64_t num_slots = key_cache.size(0) * key_cache.size(1);
  // Every slot is checked before the first write: a bad mapping leaves the cache untouched.
  if (slot_mapping.dtype == DType::Int32) {
    check_slots(slot_mapping.ptr<int32_t>(), key.size(0), slot_mapping.stride(0), num_slots);
    copy_rows(key, value, key_cache, value_cache, slot_mapping.ptr<int32_t>(), slot_mapping.stride(0));
  } else {
    check_slots(slot_mapping.ptr<int64_t>(), key.size(0), slot_mapping.stride(0), num_slots);
    copy_rows(key, value, key_cache, value_cache, slot_mapping.ptr<int64_t>(), slot_mapping.stride(0));
  }
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(kv_cache) {
  namespace py = pybind11;
  m.def("reshape_and_cache", &pio::cpu::reshape_and_cache, py::arg("key"), py::arg("value"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("slot_mapping"), PIO_NOGIL,
        "key_cache[slot // block_size, slot % block_size] = key[t] (same for value) for slot = slot_mapping[t] >= 0");
}
