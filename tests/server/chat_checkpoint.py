"""A tiny random Llama checkpoint with a ChatML chat template, for CLI and server tests."""

from __future__ import annotations

import json
from pathlib import Path

from tests.llama.checkpoints import hf_model, write_checkpoint

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_chat_checkpoint(folder: Path, max_position_embeddings: int = 256) -> Path:
    write_checkpoint(folder, hf_model(max_position_embeddings=max_position_embeddings))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = CHATML
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
