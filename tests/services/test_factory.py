"""NLPServiceFactory: the seed's usage, configuration from TOML and the environment, and clear errors."""

from __future__ import annotations

import asyncio
import logging

import pytest

from inference_pio.models import LocalModelManager
from inference_pio.services import (ConfigError, LlamaService, ModelSwitcher, NLPServiceFactory, NoServiceAvailableError,
                                    OpenAIRemoteService, UnknownModelError, UnknownServiceError, load_config)
from tests.services.conftest import MODEL_ID

TOML = """
[services]
fallback = "openai/gpt-4o-mini"
timeout = 12.5
failure_threshold = 5
cooldown = 7
moderation_categories = ["spam", "threat"]

[local]
dtype = "float32"
max_seq_len = 1024
max_tokens = 32

[openai]
model = "openai/gpt-4o"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "MY_KEY"
embedding_model = "emb-small"
timeout = 5
"""


def make(manager, tmp_path, text: str | None = TOML, env: dict | None = None) -> NLPServiceFactory:
    path = None
    if text is not None:
        path = tmp_path / "services.toml"
        path.write_text(text)
    factory = NLPServiceFactory(logging.getLogger("test"), model_manager=manager, config_path=path, env=env or {})
    asyncio.run(factory.initialize())
    return factory


def test_config_from_toml_then_environment(tmp_path):
    (tmp_path / "s.toml").write_text(TOML)
    config = load_config(tmp_path / "s.toml", env={"MY_KEY": "secret", "INFERENCE_PIO_MAX_SEQ_LEN": "2048",
                                                   "INFERENCE_PIO_DEFAULT_MODEL": "local/llama/tiny"})
    assert config.default_model == "local/llama/tiny" and config.fallback_model == "openai/gpt-4o-mini"
    assert (config.timeout, config.failure_threshold, config.cooldown) == (12.5, 5, 7.0)
    assert config.local == {"dtype": "float32", "max_seq_len": 2048, "max_tokens": 32}
    assert config.openai_api_key == "secret" and config.openai_base_url == "http://127.0.0.1:9/v1"
    assert config.moderation_categories == ("spam", "threat")
    via_env = load_config(env={"INFERENCE_PIO_SERVICES_CONFIG": str(tmp_path / "s.toml")})
    assert via_env.source == str(tmp_path / "s.toml") and via_env.openai_api_key is None
    assert not load_config(env={}).remote_configured


@pytest.mark.parametrize("text, needle", [
    ("[services]\ndefualt = 'x'\n", "unknown key services.defualt"),
    ("[nope]\na = 1\n", "unknown section [nope]"),
    ("[local]\nmax_seq_len = 'long'\n", "local.max_seq_len must be int"),
    ("[services\n", "not valid TOML"),
    ("[services]\nmoderation_categories = []\n", "moderation_categories"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, needle):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "bad.toml", env={})
    assert needle in str(e.value)


def test_bad_environment_value():
    with pytest.raises(ConfigError, match="INFERENCE_PIO_MAX_SEQ_LEN must be int"):
        load_config(env={"INFERENCE_PIO_MAX_SEQ_LEN": "lots"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/no/such/services.toml", env={})


def test_seed_usage(manager, tmp_path):
    factory = make(manager, tmp_path, env={"MY_KEY": "secret"})

    async def main():
        llama = await factory.create_service("llama")
        switcher = await factory.create_service("model_switcher")
        default = await factory.create_default_service()
        remote = await factory.create_service("openai")
        return llama, switcher, default, remote

    llama, switcher, default, remote = asyncio.run(main())
    assert type(llama) is LlamaService and llama.model_id == MODEL_ID and llama.max_tokens == 32
    assert llama.load_options == {"dtype": "float32", "max_seq_len": 1024}
    assert llama.moderation_categories == ("spam", "threat")
    assert isinstance(switcher, ModelSwitcher) and switcher.model_id == MODEL_ID
    assert switcher.fallback_model_id == "openai/gpt-4o-mini" and switcher.timeout == 12.5
    assert type(default) is LlamaService and default.model_id == MODEL_ID
    assert isinstance(remote, OpenAIRemoteService) and remote.model_name == "gpt-4o"
    assert remote.embedding_model == "emb-small" and remote.base_url == "http://127.0.0.1:9/v1"


def test_family_without_models_and_unknown_names(manager, tmp_path):
    factory = make(manager, tmp_path)
    with pytest.raises(UnknownModelError, match="no deepseek model is installed"):
        asyncio.run(factory.create_service("deepseek"))
    with pytest.raises(UnknownServiceError, match="unknown service 'gpt'.*llama.*openai.*model_switcher"):
        asyncio.run(factory.create_service("gpt"))
    with pytest.raises(UnknownServiceError):
        asyncio.run(factory.create_service("bert"))  # a family, but not a generation service


def test_default_falls_back_to_remote_then_explains(tmp_path):
    empty = LocalModelManager(home=tmp_path / "home", progress=False)
    asyncio.run(empty.initialize())
    remote = make(empty, tmp_path, text=None, env={"OPENAI_API_KEY": "k", "INFERENCE_PIO_OPENAI_MODEL": "openai/o1"})
    service = asyncio.run(remote.create_default_service())
    assert isinstance(service, OpenAIRemoteService) and service.model_id == "openai/o1"
    nothing = make(empty, tmp_path, text=None, env={})
    with pytest.raises(NoServiceAvailableError, match="install a local model.*OPENAI_API_KEY"):
        asyncio.run(nothing.create_default_service())
    with pytest.raises(NoServiceAvailableError, match="needs a model"):
        asyncio.run(nothing.create_service("model_switcher"))


def test_configured_default_wins(manager, tmp_path):
    factory = make(manager, tmp_path, env={"INFERENCE_PIO_DEFAULT_MODEL": "openai/gpt-4o", "OPENAI_API_KEY": "k"})
    assert asyncio.run(factory.create_default_service()).model_id == "openai/gpt-4o"
    bad = make(manager, tmp_path, env={"INFERENCE_PIO_DEFAULT_MODEL": "local/llama/missing"})
    with pytest.raises(UnknownModelError, match="local/llama/missing"):
        asyncio.run(bad.create_default_service())


def test_create_before_initialize():
    with pytest.raises(RuntimeError, match="initialize"):
        asyncio.run(NLPServiceFactory().create_service("llama"))
