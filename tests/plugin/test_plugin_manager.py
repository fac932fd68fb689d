"""PluginManager: discovery from the env var, entry points and tmp folders; lazy import;
broken plugins reported beside good ones; choosing a plugin for a checkpoint."""

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from inference_pio.plugin import (
    NoPluginForModelError,
    PluginLoadError,
    PluginManager,
    PluginNotFoundError,
    TextModelPluginInterface,
)

from .plugin_files import write_plugin


def test_env_var_plugin_is_found_created_and_imported_lazily(tmp_path, monkeypatch):
    write_plugin(tmp_path / "plugins" / "echo", "Echo")
    monkeypatch.setenv("INFERENCE_PIO_PLUGIN_PATH", str(tmp_path / "plugins"))
    manager = PluginManager(builtin_package=None)
    [info] = manager.list_plugins()
    assert (info.name, info.source, info.path) == ("Echo", "path", tmp_path / "plugins" / "echo")
    assert info.manifest.capabilities == ["text-generation"]
    assert info.module_name not in sys.modules  # discovery read the manifest only
    assert f"{info.module_name}.plugin" not in sys.modules

    plugin = manager.create_plugin("echo", suffix="!")  # names match case-insensitively
    assert isinstance(plugin, TextModelPluginInterface)
    assert f"{info.module_name}.plugin" in sys.modules
    assert plugin.config_class.__module__ == f"{info.module_name}.config"  # relative import worked
    assert plugin.metadata.name == "Echo"
    assert plugin.initialize(config={"hidden_size": 4, "unknown_key": 1}) and plugin.config.hidden_size == 4
    assert plugin.detokenize(plugin.tokenize("hi")) == "hi"
    assert plugin.generate_text("hi") == "hi!"
    assert manager.broken_plugins() == []


def test_env_var_entries_may_be_plugin_folders_and_missing_ones_are_reported(tmp_path, monkeypatch):
    a = write_plugin(tmp_path / "a", "A")
    b = write_plugin(tmp_path / "more" / "b", "B")
    entries = [str(a), str(tmp_path / "more"), str(tmp_path / "gone")]
    monkeypatch.setenv("INFERENCE_PIO_PLUGIN_PATH", os.pathsep.join(entries))
    manager = PluginManager(builtin_package=None)
    assert [p.name for p in manager.list_plugins()] == ["A", "B"]
    assert manager.plugin_info("b").path == b
    [broken] = manager.broken_plugins()
    assert broken.path == str(tmp_path / "gone") and "not a directory" in broken.message


def test_broken_manifests_are_reported_with_file_and_field_while_good_plugin_loads(tmp_path):
    root = tmp_path / "plugins"
    write_plugin(root / "good", "Good")
    write_plugin(root / "bad_json", "BadJson", manifest_text='{"name": ')
    write_plugin(root / "bad_type", "BadType", num_parameters="seven")
    write_plugin(root / "no_entry", "NoEntry", entry_point=None)
    manager = PluginManager([root], builtin_package=None)
    assert [p.name for p in manager.list_plugins()] == ["Good"]
    assert manager.create_plugin("Good").generate_text("ok") == "ok"
    messages = {b.path: b.message for b in manager.errors}
    assert set(messages) == {str(root / n) for n in ("bad_json", "bad_type", "no_entry")}
    assert str(root / "bad_json" / "plugin_manifest.json") in messages[str(root / "bad_json")]
    assert "invalid JSON" in messages[str(root / "bad_json")]
    assert "field 'num_parameters'" in messages[str(root / "bad_type")]
    assert "field 'entry_point'" in messages[str(root / "no_entry")]


def test_plugin_whose_code_fails_is_reported_and_not_left_half_imported(tmp_path):
    write_plugin(tmp_path / "p" / "syntax", "Syntax", code="def broken(:\n")
    write_plugin(tmp_path / "p" / "nofactory", "NoFactory", code="X = 1\n")
    manager = PluginManager([tmp_path / "p"])
    with pytest.raises(PluginLoadError, match="'Syntax'.*SyntaxError"):
        manager.create_plugin("Syntax")
    assert f"{manager.plugin_info('Syntax').module_name}.plugin" not in sys.modules
    with pytest.raises(PluginLoadError, match="no callable 'create_echo_plugin'"):
        manager.get_plugin("NoFactory")
    broken = {b.path for b in manager.broken_plugins()}
    assert broken == {str(tmp_path / "p" / "syntax"), str(tmp_path / "p" / "nofactory")}


def test_unknown_name_lists_known_plugins(tmp_path):
    write_plugin(tmp_path / "echo", "Echo")
    with pytest.raises(PluginNotFoundError, match="'llama'.*known plugins: Echo"):
        PluginManager([tmp_path / "echo"], builtin_package=None).get_plugin("llama")


def test_duplicate_name_keeps_the_first_and_reports_the_second(tmp_path):
    first = write_plugin(tmp_path / "one" / "echo", "Echo")
    second = write_plugin(tmp_path / "two" / "echo", "echo")
    manager = PluginManager([tmp_path / "one", tmp_path / "two"], builtin_package=None)
    assert [p.path for p in manager.list_plugins()] == [first]
    [broken] = manager.broken_plugins()
    assert broken.path == str(second) and "already taken" in broken.message


def test_get_plugin_shares_one_instance_across_threads(tmp_path):
    write_plugin(tmp_path / "echo", "Echo")
    manager = PluginManager([tmp_path / "echo"])
    barrier = threading.Barrier(8)

    def get(_):
        barrier.wait()
        return manager.get_plugin("Echo")

    with ThreadPoolExecutor(8) as pool:
        plugins = list(pool.map(get, range(8)))
    assert all(p is plugins[0] for p in plugins)
    assert manager.create_plugin("Echo") is not plugins[0]


def _install_distribution(site, monkeypatch):
    """A distribution laid out as pip would: the package plus a dist-info with entry points."""
    write_plugin(site / "echo_dist_plugin", "DistEcho", model_types=["echo"])
    dist_info = site / "echo_dist_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-dist-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[inference_pio.plugins]\n"
        "dist_echo = echo_dist_plugin\n"
        "not_a_package = echo_dist_plugin.plugin:create_echo_plugin\n"
    )
    monkeypatch.syspath_prepend(str(site))


def test_entry_point_distribution_is_discovered_and_imported_lazily(tmp_path, monkeypatch):
    _install_distribution(tmp_path / "site", monkeypatch)
    manager = PluginManager(builtin_package=None)
    [info] = manager.list_plugins()
    assert (info.name, info.source, info.module_name) == ("DistEcho", "entry_point", "echo_dist_plugin")
    assert "echo_dist_plugin" not in sys.modules
    assert manager.plugin_for_config({"model_type": "echo"}) is info
    assert manager.create_plugin("DistEcho").metadata.name == "DistEcho"
    assert "echo_dist_plugin.plugin" in sys.modules
    [broken] = manager.broken_plugins()
    assert "not_a_package" in broken.path and "must name a plugin package" in broken.message


def test_builtin_package_subfolders_are_plugins(tmp_path, monkeypatch):
    package = tmp_path / "site" / "fake_builtin_plugins"
    write_plugin(package / "echo", "BuiltinEcho")
    (package / "__init__.py").write_text("")
    (package / "helpers").mkdir()  # a subfolder without a manifest is not a plugin
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    manager = PluginManager(builtin_package="fake_builtin_plugins", entry_point_group=None)
    [info] = manager.list_plugins()
    assert (info.source, info.module_name) == ("builtin", "fake_builtin_plugins.echo")
    assert "fake_builtin_plugins.echo" not in sys.modules
    assert manager.get_plugin("BuiltinEcho").generate_text("x") == "x"
    assert "fake_builtin_plugins.echo.plugin" in sys.modules


def test_the_installed_builtin_package_is_searched():
    manager = PluginManager(env_var=None, entry_point_group=None)
    assert manager.broken_plugins() == []
    assert all(p.source == "builtin" for p in manager.list_plugins())


def test_compatibility_reports_satisfied_and_unsatisfied_ranges(tmp_path):
    write_plugin(tmp_path / "p" / "ok", "Ok", compatibility={
        "python_version": ">=3.8", "torch_version": ">=2.4", "transformers_version": ">=4.30", "min_memory_gb": 8.0})
    write_plugin(tmp_path / "p" / "future", "Future", compatibility={
        "python_version": ">=3.99", "torch_version": ">=2.4,<3", "min_memory_gb": 0.0})
    manager = PluginManager([tmp_path / "p"])
    versions = {"python": "3.11.7", "torch": "2.5.0a0+gitabc", "transformers": "4.45.0"}
    machine = {"versions": versions, "memory_gb": 16.0}
    report = manager.check_compatibility("Ok", **machine)
    assert report.ok, str(report)
    assert [c.what for c in report.checks] == ["python", "torch", "transformers", "memory"]

    low = manager.check_compatibility("Ok", versions={"transformers": None}, memory_gb=4.0)
    assert not low.ok
    assert {c.what for c in low.problems} == {"transformers", "memory"}
    assert "transformers >=4.30: not found" in str(low) and "4.0 GiB available" in str(low)

    future = manager.check_compatibility("Future", versions={"python": "3.11.7", "torch": "3.0.0"})
    assert {c.what for c in future.problems} == {"python", "torch"}


def test_compatibility_measures_this_machine(tmp_path):
    write_plugin(tmp_path / "p", "P", compatibility={"torch_version": ">=2.0", "min_memory_gb": 0.001})
    report = PluginManager([tmp_path / "p"]).check_compatibility("P")
    assert report.ok, str(report)
    assert report.checks[0].found == __import__("torch").__version__


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "plugins"
    write_plugin(root / "llama", "Llama", model_types=["llama"], architectures=["LlamaForCausalLM"])
    write_plugin(root / "mistral", "Mistral", model_types=["mistral"],
                 architectures=["MistralForCausalLM", "LlamaForCausalLM"])
    return PluginManager([root], builtin_package=None)


def test_plugin_for_config_prefers_model_type_over_architectures(served):
    config = {"model_type": "mistral", "architectures": ["LlamaForCausalLM"]}
    assert served.plugin_for_config(config).name == "Mistral"
    assert served.plugin_for_config({"model_type": "llama"}).name == "Llama"


def test_plugin_for_config_falls_back_to_architectures(served):
    config = {"model_type": "custom", "architectures": ["MistralForCausalLM"]}
    assert served.plugin_for_config(config).name == "Mistral"


def test_plugin_for_checkpoint_reads_config_json(served, tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert served.plugin_for_checkpoint(tmp_path / "ckpt").name == "Llama"


def test_no_matching_plugin_lists_known_model_types(served):
    with pytest.raises(NoPluginForModelError) as err:
        served.plugin_for_config({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    message = str(err.value)
    assert "'gpt2'" in message and "known model types: llama, mistral" in message
    assert "LlamaForCausalLM" in message and "MistralForCausalLM" in message
