"""Service configuration: a TOML file, overridden by environment variables.

The file is ``$INFERENCE_PIO_SERVICES_CONFIG`` (or the ``config_path`` given to the factory); every key is
optional::

    [services]
    default = "local/llama/llama-7b"     # the default service's model
    fallback = "openai/gpt-4o"           # the switcher's fallback
    timeout = 120                        # seconds before the switcher falls back
    failure_threshold = 3                # consecutive failures that open a model's circuit breaker
    cooldown = 30                        # seconds a failing model is skipped
    moderation_categories = ["harassment", "hate", "violence"]

    [local]                              # options of inference_pio.load, plus the output budget
    dtype = "bfloat16"
    max_seq_len = 4096
    max_batch_size = 8
    max_tokens = 512

    [openai]                             # the OpenAI-compatible remote service
    model = "openai/gpt-4o"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"       # the variable that holds the key (keys stay out of files)
    embedding_model = "text-embedding-3-small"
    timeout = 60
    max_retries = 1

Environment variables win over the file: ``INFERENCE_PIO_DEFAULT_MODEL``, ``INFERENCE_PIO_FALLBACK_MODEL``,
``INFERENCE_PIO_DTYPE``, ``INFERENCE_PIO_MAX_SEQ_LEN``, ``INFERENCE_PIO_OPENAI_MODEL``,
``INFERENCE_PIO_OPENAI_EMBEDDING_MODEL``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` (or the variable
``api_key_env`` names).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .moderation import DEFAULT_CATEGORIES

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib

CONFIG_ENV = "INFERENCE_PIO_SERVICES_CONFIG"

# section -> key -> accepted types
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "services": {"default": (str,), "fallback": (str,), "timeout": (int, float), "failure_threshold": (int,),
                 "cooldown": (int, float), "moderation_categories": (list,)},
    "local": {"dtype": (str,), "max_seq_len": (int,), "max_batch_size": (int,), "max_tokens": (int,),
              "device": (str,)},
    "openai": {"model": (str,), "base_url": (str,), "api_key_env": (str,), "embedding_model": (str,),
               "timeout": (int, float), "max_retries": (int,)},
}
# environment variable -> (section, key, parser)
_ENV: dict[str, tuple[str, str, type]] = {
    "INFERENCE_PIO_DEFAULT_MODEL": ("services", "default", str),
    "INFERENCE_PIO_FALLBACK_MODEL": ("services", "fallback", str),
    "INFERENCE_PIO_DTYPE": ("local", "dtype", str),
    "INFERENCE_PIO_MAX_SEQ_LEN": ("local", "max_seq_len", int),
    "INFERENCE_PIO_OPENAI_MODEL": ("openai", "model", str),
    "INFERENCE_PIO_OPENAI_EMBEDDING_MODEL": ("openai", "embedding_model", str),
    "OPENAI_BASE_URL": ("openai", "base_url", str),
}


class ConfigError(ValueError):
    """The configuration file or an environment variable holds something unusable."""


@dataclass(frozen=True)
class ServicesConfig:
    default_model: str | None = None
    fallback_model: str | None = None
    timeout: float = 120.0
    failure_threshold: int = 3
    cooldown: float = 30.0
    moderation_categories: tuple[str, ...] = DEFAULT_CATEGORIES
    local: Mapping[str, Any] = field(default_factory=dict)
    openai_model: str = "openai/gpt-4o"
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_embedding_model: str | None = None
    openai_timeout: float = 60.0
    openai_max_retries: int = 1
    source: str = "defaults"

    @property
    def remote_configured(self) -> bool:
        """Is there a remote server to fall back on (a key, or a URL of one's own)?"""
        return bool(self.openai_api_key or self.openai_base_url)

    def local_options(self) -> dict[str, Any]:
        """Keyword arguments of the local services (``inference_pio.load`` options + ``max_tokens``)."""
        return {"moderation_categories": self.moderation_categories, **self.local}

    def remote_options(self) -> dict[str, Any]:
        return {"base_url": self.openai_base_url, "api_key": self.openai_api_key,
                "embedding_model": self.openai_embedding_model, "timeout": self.openai_timeout,
                "max_retries": self.openai_max_retries, "moderation_categories": self.moderation_categories}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServicesConfig:
    """Reads ``path`` (else ``$INFERENCE_PIO_SERVICES_CONFIG``, else nothing), then applies the environment."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    data: dict[str, dict[str, Any]] = {section: {} for section in _SCHEMA}
    source = "defaults"
    if path is not None:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"services config {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"services config {path} is not valid TOML: {e}") from None
        for section, values in raw.items():
            if section not in _SCHEMA or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(_SCHEMA)})")
            for key, value in values.items():
                types = _SCHEMA[section].get(key)
                if types is None:
                    raise ConfigError(f"{path}: unknown key {section}.{key} (known: {', '.join(_SCHEMA[section])})")
                if not isinstance(value, types) or isinstance(value, bool):
                    raise ConfigError(f"{path}: {section}.{key} must be {' or '.join(t.__name__ for t in types)}, "
                                      f"got {value!r}")
                data[section][key] = value
        source = str(path)
    for variable, (section, key, parse) in _ENV.items():
        if env.get(variable):
            try:
                data[section][key] = parse(env[variable])
            except ValueError:
                raise ConfigError(f"environment variable {variable} must be {parse.__name__}, "
                                  f"got {env[variable]!r}") from None
    services, openai = data["services"], data["openai"]
    categories = services.get("moderation_categories", DEFAULT_CATEGORIES)
    if not categories or not all(isinstance(c, str) and c for c in categories):
        raise ConfigError(f"services.moderation_categories must be a non-empty list of strings, got {categories!r}")
    return ServicesConfig(
        default_model=services.get("default"), fallback_model=services.get("fallback"),
        timeout=float(services.get("timeout", 120.0)), failure_threshold=services.get("failure_threshold", 3),
        cooldown=float(services.get("cooldown", 30.0)), moderation_categories=tuple(categories),
        local=dict(data["local"]), openai_model=openai.get("model", "openai/gpt-4o"),
        openai_base_url=openai.get("base_url"), openai_api_key=env.get(openai.get("api_key_env", "OPENAI_API_KEY")),
        openai_embedding_model=openai.get("embedding_model"), openai_timeout=float(openai.get("timeout", 60.0)),
        openai_max_retries=openai.get("max_retries", 1), source=source,
    )


__all__ = ["CONFIG_ENV", "ConfigError", "ServicesConfig", "load_config"]
