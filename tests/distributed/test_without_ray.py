"""Ray is an optional extra: inference_pio works without it, and ``--replicas`` names the extra."""

from __future__ import annotations

import sys

import pytest

from inference_pio.distributed import require_ray_serve
from tests.server.chat_checkpoint import write_chat_checkpoint


@pytest.fixture
def no_ray(monkeypatch):
    for name in [n for n in sys.modules if n == "ray" or n.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError


def test_require_ray_serve_names_the_extra(no_ray):
    with pytest.raises(ImportError, match=r"inference-pio\[distributed\]"):
        require_ray_serve()


def test_pio_serve_replicas_without_ray_is_one_clear_line(no_ray, tmp_path, capfd):
    from inference_pio.cli import main

    assert main(["serve", str(write_chat_checkpoint(tmp_path)), "--replicas", "2"]) != 0
    err = capfd.readouterr().err
    assert "inference-pio[distributed]" in err and "Traceback" not in err
