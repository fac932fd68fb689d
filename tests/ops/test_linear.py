"""linear: the CPU kernel (and the torch route for large M) against the float64 reference."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from inference_pio import _native, ops
from inference_pio.ops._tensor import optional_view, view
from .helpers import FLOAT_DTYPES, assert_close, poisoned_like, randn, runnable_backends
from .helpers import device_under_test as device_under_test  # aliased: pytest would collect device_under_test
from .tolerances import ATTENTION_TOLERANCES, TOLERANCES

# The module, not the function ops.linear that the package re-exports under the same name.
lin = importlib.import_module("inference_pio.ops.linear")

M_SIZES = [1, 3, 8, 16]
K_SIZES = [16, 80, 100, 2048]  # 100: a partial tail for 8-, 16- and 32-element steps
N_SIZES = [1, 7, 64, 5632]  # 7: fewer rows than a tile, and a remainder after full tiles


def tolerances_for(k):
    # A dot product over K = 2048 terms accumulates more float32 rounding than the elementwise
    # ops TOLERANCES was set for (bf16 outputs near a rounding boundary flip one ulp); the
    # attention entry covers sums of that length.
    return ATTENTION_TOLERANCES if k > 256 else TOLERANCES


def reference64(x, w, b):
    return lin.linear_reference(x.double(), w.double(), None if b is None else b.double())


def make(m, k, n, dtype, bias):
    # Scaled so outputs are O(1) whatever K is: the tolerance then means the same for every K.
    x = randn(m, k, dtype=dtype)
    w = randn(n, k, dtype=dtype, scale=k**-0.5)
    b = randn(n, dtype=dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("backend", runnable_backends("linear"))
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("n", N_SIZES)
@pytest.mark.parametrize("k", K_SIZES)
@pytest.mark.parametrize("m", M_SIZES)
def test_matches_reference(backend, m, k, n, dtype, bias):
    if n * k > 64 * 2048 and m not in (1, 16):
        pytest.skip("the large weight is covered at M = 1 and 16; keeps the grid short")
    x, w, b = make(m, k, n, dtype, bias)
    out = poisoned_like(torch.empty(m, n, dtype=dtype, device=x.device))
    with ops.use_backend(backend):
        result = lin.linear(x, w, b, out=out)
    assert result is out
    assert_close(out, reference64(x, w, b), dtype, tolerances_for(k))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_large_m_routes_to_torch(monkeypatch, dtype, bias):
    # M = 40 > SMALL_M_MAX: torch's matmul, never the kernel (prefill is compute-bound).
    assert 40 > lin.SMALL_M_MAX
    x, w, b = make(40, 100, 64, dtype, bias)

    def fail(*args):
        raise AssertionError("the kernel ran for M > SMALL_M_MAX")

    monkeypatch.setattr(lin, "_linear", fail)
    out = poisoned_like(torch.empty(4, 10, 64, dtype=dtype, device=x.device))
    result = lin.linear(x.view(4, 10, 100), w, b, out=out)
    assert result is out
    assert_close(out.view(40, 64), reference64(x, w, b), dtype)
    assert_close(lin.linear(x, w, b), reference64(x, w, b), dtype)  # allocating


@pytest.mark.skipif(device_under_test().type != "cpu", reason="CPU kernel")
def test_small_m_uses_the_kernel(monkeypatch):
    calls = []
    original = lin._linear
    monkeypatch.setattr(lin, "_linear", lambda *a: (calls.append(1), original(*a)))
    x, w, b = make(lin.SMALL_M_MAX, 64, 32, torch.bfloat16, True)
    lin.linear(x, w, b)
    assert calls == [1]


@pytest.mark.parametrize("backend", runnable_backends("linear"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_forced_backend_runs_large_m(backend, dtype):
    # A forced backend bypasses the routing: the kernel is correct for any M (40 = 10 tiles of 4).
    x, w, b = make(40, 100, 37, dtype, True)
    with ops.use_backend(backend):
        out = lin.linear(x, w, b)
    assert_close(out, reference64(x, w, b), dtype)


@pytest.mark.parametrize("backend", runnable_backends("linear"))
def test_leading_dims_and_strided_rows(backend):
    base = randn(2, 3, 100 + 12, dtype=torch.bfloat16)
    x = base[..., :100]  # row stride 112, last dim contiguous: a slice of a wider projection
    _, w, b = make(1, 100, 19, torch.bfloat16, True)
    with ops.use_backend(backend):
        out = lin.linear(x, w, b)
    assert out.shape == (2, 3, 19) and out.is_contiguous()
    assert_close(out, reference64(x, w, b), torch.bfloat16)


@pytest.mark.parametrize("backend", runnable_backends("linear"))
def test_empty(backend):
    w = randn(8, 16)
    with ops.use_backend(backend):
        assert lin.linear(randn(0, 16), w).shape == (0, 8)
        out = lin.linear(randn(2, 0), randn(8, 0), torch.arange(8.0))  # K = 0: out = bias
    assert torch.equal(out, torch.arange(8.0).expand(2, 8))


@pytest.mark.skipif(device_under_test().type != "cpu", reason="CPU ISA modules")
@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("m", [1, 5])
def test_every_cpu_isa(isa, dtype, m):
    # The dispatcher uses the best ISA only; call each built module (AVX2, AVX-512, AVX512-BF16) directly.
    # M = 5: one full 4-row tile (2 on AVX2) and a remainder; N = 70 and K = 1000: partial tiles and tails.
    x, w, b = make(m, 1000, 70, dtype, True)
    out = poisoned_like(torch.empty(m, 70, dtype=dtype))
    _native.cpu_module(isa).linear(view(out), view(x), view(w), optional_view(b))
    assert_close(out, reference64(x, w, b), dtype, ATTENTION_TOLERANCES)


@pytest.mark.skipif(device_under_test().type != "cpu", reason="CPU kernel")
def test_nonfinite_inputs_propagate():
    x, w, _ = make(1, 64, 16, torch.bfloat16, False)
    w[3, 5] = float("inf")
    x[0, 7] = float("nan")
    out = lin.linear(x, w)
    assert torch.isnan(out).all()  # x's NaN reaches every output: no lane is skipped


# Bad input: a clear exception naming the argument.
def _x():
    return randn(3, 16)


BAD_INPUTS = [
    (lambda: (randn(3, 16).double(), randn(8, 16).double(), None), "x"),
    (lambda: (torch.ones(3, 16, dtype=torch.int32), randn(8, 16), None), "x"),
    (lambda: (randn(16, 3).t(), randn(8, 3), None), "x"),  # last dim not contiguous
    (lambda: (randn(3, 4, 16).transpose(0, 1), randn(8, 16), None), "x"),  # rows cannot merge
    (lambda: (torch.tensor(1.0), randn(8, 1), None), "x"),
    (lambda: (_x(), randn(8, 15), None), "weight"),  # K mismatch
    (lambda: (_x(), randn(8, 16, dtype=torch.bfloat16), None), "weight"),  # dtype mismatch
    (lambda: (_x(), randn(16, 8).t(), None), "weight"),  # not contiguous
    (lambda: (_x(), randn(8), None), "weight"),  # not 2-D
    (lambda: (_x(), randn(8, 16), randn(7)), "bias"),
    (lambda: (_x(), randn(8, 16), randn(1, 8)), "bias"),
    (lambda: (_x(), randn(8, 16), randn(8, dtype=torch.float16)), "bias"),
    (lambda: (_x(), randn(8, 16), randn(16)[::2]), "bias"),  # not contiguous
]


@pytest.mark.parametrize("backend", runnable_backends("linear"))
@pytest.mark.parametrize("make_args, arg", BAD_INPUTS)
def test_bad_input_raises(backend, make_args, arg):
    with ops.use_backend(backend), pytest.raises(ValueError, match=rf"^{arg}\b"):
        lin.linear(*make_args())


@pytest.mark.parametrize(
    "make_out",
    [
        lambda: torch.empty(3, 7),  # wrong shape
        lambda: torch.empty(3, 8, dtype=torch.float16),  # wrong dtype
        lambda: torch.empty(8, 3).t(),  # not contiguous
    ],
)
def test_bad_out_raises(make_out):
    with pytest.raises(ValueError, match=r"^out\b"):
        lin.linear(_x(), randn(8, 16), out=make_out().to(device_under_test()))


def test_not_a_tensor_raises():
    with pytest.raises(TypeError, match=r"^x\b"):
        lin.linear([1.0], randn(1, 1))


@pytest.mark.skipif(device_under_test().type != "cpu", reason="CPU kernel argument checks")
def test_cpu_kernel_checks_its_arguments():
    # The C++ kernel validates its views itself (layers.Linear calls it unchecked): a bad call raises.
    m = _native.cpu_module()
    x, w, out = randn(3, 16), randn(8, 16), torch.empty(3, 8)
    cases = [
        (lambda: m.linear(view(out), view(x), view(randn(8, 15)), None), "weight"),
        (lambda: m.linear(view(out), view(x), view(randn(16, 8).t()), None), "weight"),
        (lambda: m.linear(view(out), view(x), view(w.half()), None), "weight"),
        (lambda: m.linear(view(out), view(x), view(w), view(randn(7))), "bias"),
        (lambda: m.linear(view(torch.empty(3, 7)), view(x), view(w), None), "out"),
        (lambda: m.linear(view(torch.empty(2, 8)), view(x), view(w), None), "out"),
        (lambda: m.linear(view(out.half()), view(x), view(w), None), "out"),
        (lambda: m.linear(view(out), view(x.double()), view(w.double()), None), "x"),
        (lambda: m.linear(view(out), view(randn(16, 3).t()), view(w), None), "x"),
    ]
    for fn, arg in cases:
        with pytest.raises(ValueError, match=rf"^{arg}\b"):
            fn()


@pytest.mark.skipif(device_under_test().type != "cpu", reason="CPU layer")
@pytest.mark.parametrize("rows", [1, 5, 40])
@pytest.mark.parametrize("use_out", [False, True])
def test_layer_matches_torch(rows, use_out):
    from inference_pio.layers.linear import Linear

    layer = Linear(100, 37, bias=True, dtype=torch.bfloat16)
    layer.weight.data.copy_(randn(37, 100, dtype=torch.bfloat16, scale=0.1))
    layer.bias.data.copy_(randn(37, dtype=torch.bfloat16))
    x = randn(rows, 100, dtype=torch.bfloat16)
    out = poisoned_like(torch.empty(rows, 37, dtype=torch.bfloat16)) if use_out else None
    y = layer(x, out)
    if use_out:
        assert y is out
    assert_close(y, reference64(x, layer.weight, layer.bias), torch.bfloat16)


def test_torch_compile_custom_op():
    x, w, b = make(2, 32, 8, torch.float32, True)
    compiled = torch.compile(lambda x: lin.linear(x, w, b), backend="eager", fullgraph=True)
    assert_close(compiled(x), reference64(x, w, b), torch.float32)


def test_default_backend_is_cpu_on_cpu():
    if device_under_test().type != "cpu":
        pytest.skip("CPU dispatch")
    from inference_pio.ops import _dispatch

    assert _dispatch.op("linear").candidates(torch.device("cpu"))[0] == "cpu"


def test_reference_matches_torch():
    x, w, b = make(3, 40, 9, torch.float32, True)
    torch.testing.assert_close(lin.linear_reference(x, w, b), F.linear(x, w, b))
