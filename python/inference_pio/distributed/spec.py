"""What every replica loads and serves: plain data, so it travels to the replica processes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReplicaSpec:
    model_path: str
    name: str
    load_options: dict = field(default_factory=dict)  # for ``inference_pio.load``
    aliases: tuple[str, ...] = ()
    embedding_path: str | None = None
    embedding_name: str | None = None
    api_key: str | None = None
    max_request_bytes: int | None = None  # None: the server's default

    def state(self):
        """Loads the models: the ``ServerState`` that ``create_app`` serves."""
        from .. import load
        from ..server import ServedModel, ServerState

        model = load(self.model_path, **self.load_options)
        generator = ServedModel(self.name, model, model.async_engine(), aliases=self.aliases)
        embedder = ServedModel(self.embedding_name, load(self.embedding_path)) if self.embedding_path else None
        return ServerState(generator, embedder, self.api_key)

    def app(self, state):
        from ..server import create_app

        if self.max_request_bytes is None:
            return create_app(state)
        return create_app(state, max_request_bytes=self.max_request_bytes)
