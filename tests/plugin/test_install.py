"""install(): reports missing dependencies with the pip command and runs pip only when asked."""

import shlex
import subprocess
import sys

from importlib.metadata import version

import pytest

from inference_pio.plugin import MissingDependencyError, PluginInstallError, PluginManager

from .plugin_files import write_plugin

MISSING = "inference-pio-test-absent-package>=1.0"


@pytest.fixture
def plugin(tmp_path):
    # pytest is met; the torch requirement's marker does not apply, so it is skipped.
    dependencies = [MISSING, "packaging>=999", "pytest", "torch>=99; python_version < '3'"]
    write_plugin(tmp_path / "p", "Deps", dependencies=dependencies)
    return PluginManager([tmp_path / "p"]).create_plugin("Deps")


@pytest.fixture
def pip_calls(monkeypatch):
    """Records subprocess calls instead of running them."""
    calls = []

    def record(args, *a, **kw):
        calls.append(list(args))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(subprocess, "run", record)
    monkeypatch.setattr(subprocess, "check_call", record)
    monkeypatch.setattr(subprocess, "Popen", record)
    return calls


def test_install_reports_missing_and_wrong_version_without_running_pip(plugin, pip_calls):
    report = plugin.install()
    assert pip_calls == []
    assert not report.ok
    unmet = [(u.requirement, u.installed) for u in report.unmet]
    assert unmet == [(MISSING, None), ("packaging>=999", version("packaging"))]
    assert report.pip_command == (sys.executable, "-m", "pip", "install", MISSING, "packaging>=999")
    assert shlex.join(report.pip_command) in str(report)


def test_install_can_raise_with_the_report(plugin, pip_calls):
    with pytest.raises(MissingDependencyError, match="not installed") as err:
        plugin.install(raise_on_unmet=True)
    assert err.value.report.pip_command[-1] == "packaging>=999"
    assert pip_calls == []


def test_install_runs_pip_only_with_run_pip(plugin, pip_calls):
    report = plugin.install(run_pip=True)
    assert pip_calls == [[sys.executable, "-m", "pip", "install", MISSING, "packaging>=999"]]
    assert not report.ok  # the recorder installed nothing: the recheck says so


def test_failing_pip_raises_with_the_command(plugin, monkeypatch):
    def fail(args, *a, **kw):
        raise subprocess.CalledProcessError(1, args)

    monkeypatch.setattr(subprocess, "run", fail)
    with pytest.raises(PluginInstallError, match="'Deps': pip exited with status 1") as err:
        plugin.install(run_pip=True)
    assert str(err.value).endswith(shlex.join(plugin.install().pip_command))


def test_manager_checks_dependencies_without_importing(tmp_path):
    write_plugin(tmp_path / "p", "Deps", dependencies=["pytest>=1"])
    manager = PluginManager([tmp_path / "p"])
    assert manager.check_dependencies("Deps").ok
    assert manager.plugin_info("Deps").module_name not in sys.modules
