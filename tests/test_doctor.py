"""`python -m inference_pio doctor` and `pio doctor` report the backends and exit 0."""

import subprocess
import sys

from inference_pio import doctor


def test_collect_reports_cpu_backend_and_ops():
    info = doctor.collect()
    assert info["cpu"]["available"], info["cpu"]
    assert info["cpu"]["isa"] in info["cpu"]["supported_isas"]
    assert "cpu" in info["ops"]["rms_norm"]
    report = doctor.format_report(info)
    assert f"cpu backend   yes: {info['cpu']['isa']}" in report


def test_doctor_subprocess_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "inference_pio", "doctor"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "inference-pio" in proc.stdout and "cpu backend" in proc.stdout and "cuda backend" in proc.stdout
