"""The shared decoder and the generic decoder plugin base: plugins independent of each other, configs in
line with their manifests, the q/k RMSNorm switch against transformers' Qwen3, the fused step used by
every Llama-family plugin."""

from __future__ import annotations

import ast
import inspect
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import inference_pio.plugins as builtin_plugins
from inference_pio.engine.generate import greedy
from inference_pio.layers.decode_plan import FusedDecodeUnsupported
from inference_pio.layers.fused_decode import FUSED_DECODE_ENV, FusedDecoder, fused_decoder_of
from inference_pio.plugin import ModelPluginMetadata, PluginType
from inference_pio.plugin.decoder_config import DecoderConfig
from inference_pio.plugin.decoder_plugin import DecoderPlugin
from inference_pio.plugins.llama import Llama_Plugin
from inference_pio.plugins.llama.config import LlamaConfig
from inference_pio.plugins.mistral import Mistral_Plugin
from inference_pio.plugins.qwen2 import Qwen2_Plugin
from tests.llama.checkpoints import (hf_greedy, hf_logits, hf_model, load_plugin, random_tokens, teacher_forced_logits,
                                     write_checkpoint)

PLUGINS_DIR = Path(builtin_plugins.__file__).parent
PLUGIN_FOLDERS = sorted(p for p in PLUGINS_DIR.iterdir() if (p / "plugin_manifest.json").is_file())


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(module name, level) of every import in ``path``, relative ones with their dots as ``level``;
    ``from X import y`` also counts as importing ``X.y`` (``y`` may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            found.append((module, node.level))
            found += [(f"{module}.{alias.name}".lstrip("."), node.level) for alias in node.names]
    return found


def test_the_scan_sees_every_builtin_plugin():
    assert {"llama", "mistral", "qwen2", "deepseek"} <= {p.name for p in PLUGIN_FOLDERS}


@pytest.mark.parametrize("folder", PLUGIN_FOLDERS, ids=lambda p: p.name)
def test_no_plugin_imports_another_plugin(folder):
    others = {p.name for p in PLUGIN_FOLDERS} - {folder.name}
    offending = []
    for path in folder.rglob("*.py"):
        depth = len(path.relative_to(folder).parts) - 1  # packages between the plugin's root and the file
        for module, level in imported_modules(path):
            parts = module.split(".")
            absolute_other = (parts[:2] in (["inference_pio", "plugins"],) and len(parts) > 2 and parts[2] in others) \
                or (parts[0] == "plugins" and len(parts) > 1 and parts[1] in others)
            leaves_plugin = level > depth + 1  # a relative import above the plugin's own package
            if absolute_other or leaves_plugin:
                offending.append(f"{path.relative_to(PLUGINS_DIR)}: {'.' * level}{module}")
    assert not offending, f"plugins import other plugins: {offending}"


def decoder_plugin_classes():
    from inference_pio.plugin import PluginManager

    manager = PluginManager()
    classes = []
    for folder in PLUGIN_FOLDERS:
        manifest = json.loads((folder / "plugin_manifest.json").read_text())
        plugin = manager.create_plugin(manifest["name"])
        if isinstance(plugin, DecoderPlugin) and issubclass(plugin.config_class, DecoderConfig):
            classes.append((folder.name, manifest, type(plugin)))
    return classes


def test_decoder_configs_read_what_their_manifests_route_to_them():
    checked = decoder_plugin_classes()
    assert {name for name, _, _ in checked} >= {"llama", "mistral", "qwen2", "qwen3", "phi3"}
    for name, manifest, plugin_class in checked:
        cfg = plugin_class.config_class
        assert list(cfg.model_types) == manifest["model_types"], name
        assert list(cfg.architectures) == manifest["architectures"], name
        assert cfg.family_name == manifest["model_family"], name
        assert plugin_class().metadata.name == manifest["name"], name  # metadata is the manifest's
        tree = ast.parse(Path(inspect.getfile(cfg)).read_text())
        assigned = {node.target.id for node in ast.walk(tree)
                    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
        repeated = assigned & {"model_types", "architectures", "family_name"}  # the manifest is the only source
        assert not repeated, f"{name}/config.py repeats {sorted(repeated)}, which its manifest holds"


def test_a_config_takes_routing_and_family_from_the_manifest_beside_it(tmp_path, monkeypatch):
    folder = tmp_path / "plug_gecko"
    folder.mkdir()
    manifest = json.loads((Path(inspect.getfile(LlamaConfig)).with_name("plugin_manifest.json")).read_text())
    manifest.update(name="Gecko", model_family="Gecko", model_types=["gecko"], architectures=["GeckoForCausalLM"])
    (folder / "plugin_manifest.json").write_text(json.dumps(manifest))
    (folder / "gecko_config.py").write_text(
        "from dataclasses import dataclass\n"
        "from inference_pio.plugin.decoder_config import DecoderConfig\n\n"
        "@dataclass(kw_only=True)\nclass GeckoConfig(DecoderConfig):\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    from gecko_config import GeckoConfig

    assert (GeckoConfig.model_types, GeckoConfig.architectures, GeckoConfig.family_name) == (
        ("gecko",), ("GeckoForCausalLM",), "Gecko")


# ----- q/k RMSNorm (Qwen3's switch), through a plugin that is only a config -----


@dataclass(kw_only=True)
class QkNormConfig(DecoderConfig):
    """transformers' Qwen3 layout: Llama's names plus per-head q/k RMSNorm, no biases."""

    model_types: ClassVar[tuple[str, ...]] = ("qwen3",)
    architectures: ClassVar[tuple[str, ...]] = ("Qwen3ForCausalLM",)
    qk_norm: ClassVar[bool] = True


class QkNormPlugin(DecoderPlugin):
    config_class = QkNormConfig

    def __init__(self):
        super().__init__(ModelPluginMetadata(name="qk-norm", version="0", author="tests", description="test",
                                             plugin_type=PluginType.MODEL_COMPONENT))


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Qwen3ForCausalLM"):
        pytest.skip("this transformers has no Qwen3")
    hf = hf_model(family="qwen3", head_dim=16)
    return hf, write_checkpoint(tmp_path_factory.mktemp("qwen3"), hf)


def binding_takes_qk_norm() -> bool:
    from inference_pio import _native

    return "q_norm:" in (_native.cpu_module().PlanLayer.__init__.__doc__ or "")


@pytest.mark.parametrize("fused", ["0", "1"])
def test_qk_norm_logits_match_transformers_prefill_and_every_decode_step(qwen3, monkeypatch, fused):
    hf, folder = qwen3
    monkeypatch.setenv(FUSED_DECODE_ENV, fused)
    plugin = load_plugin(QkNormPlugin, folder)
    assert plugin.model.layers[0].self_attn.q_norm is not None
    tokens = random_tokens(40, seed=3)
    torch.testing.assert_close(teacher_forced_logits(plugin, tokens, prompt_len=24), hf_logits(hf, tokens),
                               rtol=1e-4, atol=1e-4)
    # The fused step runs q/k norm when this build's plan takes it; else the model is refused by name.
    assert (fused_decoder_of(plugin.model) is not None) == (fused == "1" and binding_takes_qk_norm())


def test_qk_norm_greedy_tokens_identical(qwen3):
    hf, folder = qwen3
    plugin = load_plugin(QkNormPlugin, folder)
    prompt = random_tokens(9, seed=4)
    [seq] = plugin.engine.generate([prompt], greedy(32, ignore_eos=True))
    assert seq.output_token_ids == hf_greedy(hf, prompt, 32)


def test_a_plan_without_one_of_the_qk_norms_is_refused_by_name(qwen3):
    _, folder = qwen3
    model = load_plugin(QkNormPlugin, folder).model
    plan = model.decode_plan()
    layer = plan.layers[1]
    broken = dataclasses.replace(plan, layers=(plan.layers[0], dataclasses.replace(layer, k_norm=None)))
    with pytest.raises(FusedDecodeUnsupported, match=r"layers\.1\.self_attn: q_norm and k_norm come together"):
        FusedDecoder(broken)


# ----- the fused step is the decode path of every Llama-family plugin -----


@pytest.mark.parametrize("plugin_class, family", [(Llama_Plugin, "llama"), (Mistral_Plugin, "mistral"),
                                                  (Qwen2_Plugin, "qwen2")])
def test_decode_steps_run_through_the_model_built_plan(tmp_path, monkeypatch, plugin_class, family):
    monkeypatch.setenv(FUSED_DECODE_ENV, "1")
    plugin = load_plugin(plugin_class, write_checkpoint(tmp_path, hf_model(family=family, num_hidden_layers=1),
                                                        tokenizer=False))
    plugin.engine.generate([[5, 6, 7]], greedy(3, ignore_eos=True))
    decoder = fused_decoder_of(plugin.model)
    assert decoder is not None and decoder.vocab_size == plugin.config.vocab_size


@pytest.mark.slow
def test_the_default_gguf_decodes_through_the_model_built_plan(monkeypatch):
    """SmolLM2's Q4_1 GGUF (quantized projections, tied quantized head) fits the plan as loaded."""
    from inference_pio.defaults import DefaultModelMissingError, default_model_path

    try:
        path = default_model_path()
    except DefaultModelMissingError as exc:
        pytest.skip(f"needs the default model: {exc}")
    monkeypatch.setenv(FUSED_DECODE_ENV, "1")
    plugin = Llama_Plugin()
    plugin.load(model_path=path, max_seq_len=64, max_batch_size=1)
    try:
        [seq] = plugin.engine.generate([[1, 2, 3]], greedy(3, ignore_eos=True))
        assert len(seq.output_token_ids) == 3
        assert fused_decoder_of(plugin.model) is not None
    finally:
        plugin.cleanup()
