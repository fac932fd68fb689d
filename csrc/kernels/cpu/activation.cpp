// Gated MLP activations over rows of x [num_rows, 2*d] (row stride allowed, last dim contiguous):
// out[r, i] = act(x[r, i]) * x[r, d + i], float32 math, one rounding to the output dtype.
#include <string>

#include "activation_math.h"
#include "dispatch.h"
#include "parallel.h"
#include "pio/pybind_tensor_view.h"
#include "vec.h"

namespace pio::cpu {
namespace {

// Below this many outputs per thread, waking a second thread costs more than it saves
// (an output costs ~20 vector ops, several times rms_norm's, hence the smaller figure).
// Below this, one thread: waking the second costs more than it saves, and a descheduled
// thread stalls the whole region for a scheduler tick on a busy machine.
constexpr int64_t kMinElemsPerThread = 1 << 15;

struct Silu {
  VecF operator()(VecF x) const { return vsilu(x); }
};
struct GeluErf {
  VecF operator()(VecF x) const { return vgelu_erf(x); }
};
struct GeluTanh {
  VecF operator()(VecF x) const { return vgelu_tanh(x); }
};

// out[i] = act(gate[i]) * up[i] for i < n.
template <class T, class Act>
void gated_span(T* out, const T* gate, const T* up, int64_t n, Act act) {
  constexpr int N = VecF::N;
  int64_t i = 0;
  for (; i + N <= n; i += N) store(out + i, act(load(gate + i)) * load(up + i));
  if (i < n) {
    int t = int(n - i);
    store_partial(out + i, act(load_partial(gate + i, t)) * load_partial(up + i, t), t);
  }
}

// Work is split into tiles of (row, column block). With at least as many rows as threads a
// tile is a whole row; with fewer (decode: one token) rows are cut into column blocks so
// every core gets a share.
template <class T, class Act>
void gated_impl(const TensorView& out, const TensorView& x, Act act) {
  const int64_t rows = x.size(0), d = out.size(1);
  const int64_t xs = x.stride(0), os = out.stride(0);
  const T* xp = x.ptr<T>();
  T* op = out.ptr<T>();
  if (rows == 0 || d == 0) return;
  int64_t blocks_per_row = 1;
  if (rows < num_threads())
    blocks_per_row = std::max<int64_t>(1, std::min<int64_t>(num_threads(), d / kMinElemsPerThread));
  // Blocks are whole vectors so only the row's last block has a partial tail.
  const int64_t block = (d + blocks_per_row * VecF::N - 1) / (blocks_per_row * VecF::N) * VecF::N;
  blocks_per_row = (d + block - 1) / block;
  parallel_for(rows * blocks_per_row, std::max<int64_t>(1, kMinElemsPerThread / block), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r = t / blocks_per_row, c = (t % blocks_per_row) * block;
      const T* row = xp + r * xs;
      gated_span(op + r * os + c, row + c, row + d + c, std::min(block, d - c), act);
    }
  });
}

// Validates x [rows, 2*d] and out [rows, d]; returns d.
int64_t check_gated(const TensorView& out, const TensorView& x) {
  check_cpu(x, "x");
  check_float(x, "x");
  check_ndim(x, "x", 2);
  check_last_dim_contiguous(x, "x");
  check_not_null(x, "x");
  PIO_CHECK(x.size(1) % 2 == 0, "x.shape[1] must be even (gate and up halves), got shape ", x.shape_str());
  const int64_t d = x.size(1) / 2;
  check_cpu(out, "out");
  check_ndim(out, "out", 2);
  check_dim(out, "out", 0, x.size(0));
  check_dim(out, "out", 1, d);
  check_last_dim_contiguous(out, "out");
  check_not_null(out, "out");
  check_same_dtype(out, "out", x, "x");
  return d;
}

}  // namespace

// Public entry points (declared in cpu_ops.h, called by the fused decode step in csrc/decoder too).
void silu_and_mul(const TensorView& out, const TensorView& x) {
  check_gated(out, x);
  PIO_DISPATCH_FLOAT(x.dtype, "silu_and_mul", [&] { gated_impl<scalar_t>(out, x, Silu{}); });
}

void gelu_and_mul(const TensorView& out, const TensorView& x, const std::string& approximate) {
  check_gated(out, x);
  PIO_CHECK(approximate == "none" || approximate == "tanh", "approximate must be 'none' or 'tanh', got '",
            approximate, "'");
  PIO_DISPATCH_FLOAT(x.dtype, "gelu_and_mul", [&] {
    if (approximate == "tanh") gated_impl<scalar_t>(out, x, GeluTanh{});
    else gated_impl<scalar_t>(out, x, GeluErf{});
  });
}

}  // namespace pio::cpu

PIO_CPU_BINDINGS(activation) {
  namespace py = pybind11;
  m.def("silu_and_mul", &pio::cpu::silu_and_mul, py::arg("out"), py::arg("x"), PIO_NOGIL,
        "out[r, i] = silu(x[r, i]) * x[r, d + i]; x: [rows, 2*d], out: [rows, d]");
  m.def("gelu_and_mul", &pio::cpu::gelu_and_mul, py::arg("out"), py::arg("x"), py::arg("approximate"), PIO_NOGIL,
        "out[r, i] = gelu(x[r, i]) * x[r, d + i] (approximate: 'none' = erf, 'tanh'); x: [rows, 2*d]");
}
