// The CUDA extension module: binds the entry points of csrc/kernels/cuda/*.cu (declared in
// cuda_ops.h). Kernels run on the stream passed in each tensor view and release the GIL.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "kernels/cuda/cuda_ops.h"
#include "pio/pybind_tensor_view.h"

#define PIO_NOGIL pybind11::call_guard<pybind11::gil_scoped_release>()

PYBIND11_MODULE(_cuda, m) {
  namespace py = pybind11;
  using namespace pio::cuda;
  m.doc() = "inference-pio CUDA C++ kernels";
  pio::register_exceptions(m);
  m.attr("archs") = PIO_CUDA_ARCHS;
  m.attr("cuda_runtime_version") = CUDART_VERSION;
  m.def("device_count", [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  });
  m.def("rms_norm", &rms_norm, py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("eps"), PIO_NOGIL);
  m.def("fused_add_rms_norm", &fused_add_rms_norm, py::arg("x"), py::arg("residual"), py::arg("weight"),
        py::arg("eps"), PIO_NOGIL);
  m.def("silu_and_mul", &silu_and_mul, py::arg("out"), py::arg("x"), PIO_NOGIL);
  m.def("gelu_and_mul", &gelu_and_mul, py::arg("out"), py::arg("x"), py::arg("approximate"), PIO_NOGIL);
  m.def("rotary_embedding", &rotary_embedding, py::arg("positions"), py::arg("query"), py::arg("key"),
        py::arg("cos_sin_cache"), py::arg("is_neox"), PIO_NOGIL);
  m.def("reshape_and_cache", &reshape_and_cache, py::arg("key"), py::arg("value"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("slot_mapping"), PIO_NOGIL);
  m.def("paged_decode_attention", &paged_decode_attention, py::arg("out"), py::arg("query"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("block_tables"), py::arg("context_lens"), py::arg("scale"),
        py::arg("sliding_window"), py::arg("max_context_len"), PIO_NOGIL);
  m.def("prefill_attention", &prefill_attention, py::arg("out"), py::arg("query"), py::arg("key"), py::arg("value"),
        py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("causal"), py::arg("scale"),
        py::arg("sliding_window"), py::arg("block_tables"), py::arg("max_seqlen_q"), PIO_NOGIL);
}
