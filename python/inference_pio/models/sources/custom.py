"""A custom model: a safetensors checkpoint folder served by a plugin the user names.

The plugin comes from the ``plugin`` argument or, failing that, a ``"plugin"`` key in the
folder's config.json; it must be one the plugin manager discovers (a plugin folder in
``INFERENCE_PIO_PLUGIN_PATH``, an installed distribution, or a built-in one).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidModelError
from ..types import ModelSource
from .base import FoundModel
from .folder import describe_checkpoint, read_config


def describe_custom(folder: str | Path, *, plugin: str | None = None, name: str | None = None) -> FoundModel:
    from ...plugin import PluginManager
    from ...plugin.errors import PluginNotFoundError

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidModelError(f"{folder}: a custom model is a folder with config.json and *.safetensors")
    plugin = plugin or read_config(folder).get("plugin")
    if not isinstance(plugin, str) or not plugin:
        raise InvalidModelError(f"{folder}: a custom model needs a plugin name (the plugin argument, "
                                "or a \"plugin\" key in its config.json)")
    try:
        plugin = PluginManager().plugin_info(plugin).name
    except PluginNotFoundError as e:
        raise InvalidModelError(f"{folder}: {e}") from e
    return describe_checkpoint(folder, source=ModelSource.CUSTOM, name=name, plugin=plugin)
