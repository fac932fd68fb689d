"""silu_and_mul and gelu_and_mul: every backend against the float64 reference."""

import pytest
import torch

from inference_pio import _native, ops
from inference_pio.ops import activation
from inference_pio.ops._tensor import view
from .helpers import (
    FLOAT_DTYPES,
    assert_close,
    poisoned_like,
    randn,
    runnable_backends,
    skip_if_interpreted_and_large,
)
from .helpers import device_under_test as device_under_test  # aliased: pytest would collect device_under_test

# (op name, approximate or None): the three activations sharing one test grid.
ACTIVATIONS = [("silu_and_mul", None), ("gelu_and_mul", "none"), ("gelu_and_mul", "tanh")]
ACT_IDS = ["silu", "gelu", "gelu_tanh"]
D_SIZES = [1, 7, 16, 17, 80, 5632, 11008]
ROWS = [1, 3, 128]


def call(name, approximate, x, out=None):
    if name == "silu_and_mul":
        return activation.silu_and_mul(x, out=out)
    return activation.gelu_and_mul(x, approximate, out=out)


def reference64(name, approximate, x):
    if name == "silu_and_mul":
        return activation.silu_and_mul_reference(x.double())
    return activation.gelu_and_mul_reference(x.double(), approximate)


def check_against_reference(backend, name, approximate, x):
    out = poisoned_like(x[..., : x.shape[-1] // 2].contiguous())
    with ops.use_backend(backend):
        result = call(name, approximate, x, out=out)
    assert result is out
    assert_close(out, reference64(name, approximate, x), x.dtype)


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("d", D_SIZES)
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_matches_reference(backend, act, d, rows, dtype):
    skip_if_interpreted_and_large(backend, rows * d)
    check_against_reference(backend, *act, randn(rows, 2 * d, dtype=dtype, scale=3.0))


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_3d_input(backend, act):
    check_against_reference(backend, *act, randn(2, 5, 2 * 80, dtype=torch.bfloat16, scale=3.0))


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(9, 2 * 40), (2, 3, 2 * 17), (2, 2 * 5632)], ids=str)
def test_strided_rows(backend, act, shape):
    skip_if_interpreted_and_large(backend, shape[-1] * 9)
    base = randn(*shape[:-1], shape[-1] + 24, scale=3.0)
    x = base[..., : shape[-1]]  # row stride > 2*d, last dim contiguous: a slice of a wider projection
    assert not x.is_contiguous()
    check_against_reference(backend, *act, x)


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_large_magnitude_inputs_are_finite(backend, act, dtype):
    # exp(-x) overflows float32 beyond |x| ~ 88: the kernels must not turn that into inf/inf = NaN.
    edges = torch.tensor([-30.0, 30.0, -100.0, 100.0, -88.5, 88.5, -10.0, 10.0, 0.0, -0.0])
    gate = torch.cat([edges, torch.empty(54).uniform_(-30, 30)])
    up = torch.cat([torch.full((10,), 1.5), torch.empty(54).uniform_(-30, 30)])
    x = torch.cat([gate, up]).to(dtype).unsqueeze(0).repeat(3, 1).to(device_under_test())
    out = poisoned_like(x[:, :64].contiguous())
    with ops.use_backend(backend):
        call(*act, x, out=out)
    assert torch.isfinite(out).all()
    assert_close(out, reference64(*act, x), dtype)


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
def test_allocates_out_with_leading_dims(backend):
    x = randn(4, 3, 2 * 16)
    with ops.use_backend(backend):
        out = activation.silu_and_mul(x)
        out_g = activation.gelu_and_mul(x)
    assert out.shape == (4, 3, 16) and out.dtype == x.dtype and out.is_contiguous()
    assert_close(out, activation.silu_and_mul_reference(x.double()), x.dtype)
    assert_close(out_g, activation.gelu_and_mul_reference(x.double()), x.dtype)


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
def test_zero_rows(backend):
    x = randn(0, 2 * 8)
    with ops.use_backend(backend):
        assert activation.silu_and_mul(x).shape == (0, 8)


@pytest.mark.skipif(device_under_test().type != "cpu", reason="CPU ISA modules")
@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_every_cpu_isa(isa, act, dtype):
    # The dispatcher uses the best ISA only; call each built module (AVX2 too) directly.
    name, approximate = act
    x = randn(3, 2 * 4133, dtype=dtype, scale=3.0)  # 4133: a partial vector tail for 8 and 16 lanes
    out = poisoned_like(x[:, :4133].contiguous())
    module = _native.cpu_module(isa)
    if approximate is None:
        module.silu_and_mul(view(out), view(x))
    else:
        module.gelu_and_mul(view(out), view(x), approximate)
    assert_close(out, reference64(name, approximate, x), dtype)


# Bad input: a clear exception naming the argument.
BAD_INPUTS = [
    (lambda: randn(3, 7), "x"),  # odd last dim
    (lambda: randn(3, 0), "x"),
    (lambda: randn(3, 8).double(), "x"),
    (lambda: torch.ones(3, 8, dtype=torch.int32), "x"),
    (lambda: randn(8, 3).t(), "x"),  # last dim not contiguous
    (lambda: randn(3, 4, 8).transpose(0, 1), "x"),  # leading dims cannot merge into rows
    (lambda: torch.tensor(1.0), "x"),
]


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
@pytest.mark.parametrize("make_x, arg", BAD_INPUTS)
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_bad_x_raises(backend, act, make_x, arg):
    with ops.use_backend(backend), pytest.raises(ValueError, match=rf"^{arg}\b"):
        call(*act, make_x())


@pytest.mark.parametrize("backend", runnable_backends("silu_and_mul"))
@pytest.mark.parametrize(
    "make_out",
    [
        lambda x: torch.empty(3, 5, dtype=x.dtype),  # wrong shape
        lambda x: torch.empty(3, 8, dtype=x.dtype),  # the input's shape
        lambda x: torch.empty(3, 4, dtype=torch.float16),  # wrong dtype
        lambda x: torch.empty(4, 3, dtype=x.dtype).t(),  # not contiguous
    ],
)
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_bad_out_raises(backend, act, make_out):
    x = randn(3, 8)
    with ops.use_backend(backend), pytest.raises(ValueError, match=r"^out\b"):
        call(*act, x, out=make_out(x))


def test_not_a_tensor_raises():
    with pytest.raises(TypeError, match=r"^x\b"):
        activation.silu_and_mul([1.0, 2.0])


@pytest.mark.parametrize("approximate", ["erf", "Tanh", "", None, 1])
def test_bad_approximate_raises(approximate):
    with pytest.raises(ValueError, match=r"^approximate\b"):
        activation.gelu_and_mul(randn(2, 8), approximate)


@pytest.mark.skipif(device_under_test().type != "cpu", reason="CPU kernel argument checks")
def test_cpu_kernel_checks_its_arguments():
    # The C++ kernels validate their views themselves: a bad call raises, never crashes.
    m = _native.cpu_module()
    x, out = randn(3, 8), torch.empty(3, 4)
    cases = [
        (lambda: m.silu_and_mul(view(torch.empty(3, 5)), view(x)), "out"),
        (lambda: m.silu_and_mul(view(torch.empty(2, 4)), view(x)), "out"),
        (lambda: m.silu_and_mul(view(out.half()), view(x)), "out"),
        (lambda: m.silu_and_mul(view(out), view(randn(3, 7))), "x"),
        (lambda: m.silu_and_mul(view(out), view(randn(8, 3).t())), "x"),
        (lambda: m.silu_and_mul(view(out), view(randn(3, 8).double())), "x"),
        (lambda: m.silu_and_mul(view(out.view(3, 2, 2)), view(x)), "out"),
        (lambda: m.gelu_and_mul(view(out), view(x), "erf"), "approximate"),
    ]
    for fn, arg in cases:
        with pytest.raises(ValueError, match=rf"^{arg}\b"):
            fn()


def test_default_backend_is_cpu_on_cpu():
    if device_under_test().type != "cpu":
        pytest.skip("CPU dispatch")
    from inference_pio.ops import _dispatch

    for name in ("silu_and_mul", "gelu_and_mul"):
        assert _dispatch.op(name).candidates(torch.device("cpu"))[0] == "cpu"


@pytest.mark.parametrize("approximate", [None, "none", "tanh"])
def test_custom_ops_pass_opcheck(approximate):
    x = randn(3, 2 * 24)
    if approximate is None:
        torch.library.opcheck(torch.ops.inference_pio.silu_and_mul.default, (x,))
    else:
        torch.library.opcheck(torch.ops.inference_pio.gelu_and_mul.default, (x, approximate))
