"""benchmarks/report.py on a small synthetic pytest-benchmark JSON."""

import importlib.util
import json
import re

import pytest

from benchmarks import report


def bench(group, backend, median, gbs=None, fraction=None, gflops=None):
    info = {"backend": backend, "shape": "4x8", "copy_bandwidth_gbs": 20.0, "threads": 2}
    if gbs is not None:
        info.update(bytes=1000, gbs=gbs, fraction_of_copy_bw=fraction)
    if gflops is not None:
        info.update(flops=10**6, gflops=gflops)
    return {
        "group": group,
        "name": f"test_op[{backend}]",
        "fullname": f"benchmarks/ops/bench_op.py::test_op[{backend}]",
        "params": {"backend": backend},
        "extra_info": info,
        "stats": {"min": median * 0.9, "max": median * 1.2, "mean": median, "median": median, "rounds": 5},
    }


RESULTS = {
    "machine_info": {"cpu": {"brand_raw": "Test CPU 9000", "count": 2}, "python_version": "3.11.7"},
    "datetime": "2025-01-02T03:04:05",
    "version": "4.0.0",
    "benchmarks": [
        bench("op_a 1x64", "inference_pio.cpu", 1e-6, gbs=10.0, fraction=0.5),
        bench("op_a 1x64", "reference", 4e-6, gbs=2.5, fraction=0.125),
        bench("op_a 1x64", "torch_eager_transformers", 2e-6, gbs=5.0, fraction=0.25),
        bench("op_b 512x64", "torch_eager", 3e-3, gflops=1.0),
        bench("op_b 512x64", "inference_pio.cpu", 1e-3, gflops=3.0),
        bench("op_b 512x64", "reference", 6e-3, gflops=0.5),
    ],
}


def table_rows(section: str) -> dict[str, list[str]]:
    """backend -> its table cells in one markdown section."""
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| backend"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_report_writes_table_and_chart(tmp_path, capsys):
    results_json = tmp_path / "cpu-test.json"
    results_json.write_text(json.dumps(RESULTS))
    out_dir = tmp_path / "out"
    assert report.main([str(results_json), "--out-dir", str(out_dir)]) == 0

    md = (out_dir / "cpu-test.md").read_text()
    assert "Test CPU 9000" in md and "2025-01-02" in md and "20.0 GB/s" in md and "threads: 2" in md
    sections = re.split(r"^## ", md, flags=re.M)[1:]
    assert [s.splitlines()[0] for s in sections] == ["op_a 1x64", "op_b 512x64"]

    a = table_rows(sections[0])
    assert a["inference_pio.cpu"][1:5] == ["1 µs", "2.00×", "10.0", "50%"]
    assert a["reference"][1:3] == ["4 µs", "0.50×"]
    assert a["torch_eager_transformers"][2] == "1.00×"
    assert "vs torch_eager_transformers" in sections[0]

    b = table_rows(sections[1])
    assert b["inference_pio.cpu"][1:3] == ["1 ms", "3.00×"]
    assert b["reference"][2] == "0.50×"
    assert b["inference_pio.cpu"][-1] == "3.0"  # GFLOP/s column present for this group
    assert b["inference_pio.cpu"][3] == "–"  # no bytes recorded

    progress = capsys.readouterr().out
    assert "op_a 1x64: 3 backends, fastest inference_pio.cpu" in progress

    png = out_dir / "cpu-test.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert not png.exists()
        pytest.skip("matplotlib is not installed: only the table was checked")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000


def test_group_without_torch_baseline_has_no_ratio(tmp_path):
    results = dict(RESULTS, benchmarks=[bench("lonely", "inference_pio.cpu", 1e-6), bench("lonely", "reference", 2e-6)])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    report.main([str(path)])
    rows = table_rows((tmp_path / "r.md").read_text())
    assert rows["inference_pio.cpu"][2] == "–"
    assert not (tmp_path / "r.png").exists()
