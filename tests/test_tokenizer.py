"""Tokenizer against transformers' PreTrainedTokenizerFast loaded from the same (offline-built) folder."""

from __future__ import annotations

import json

import jinja2
import pytest
from tokenizers import processors

from inference_pio.tokenizer import Tokenizer

from .engine.tiny_tokenizers import byte_level_bpe

transformers = pytest.importorskip("transformers")

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hi 😀 in 中文."},
    {"role": "assistant", "content": "你好"},
    {"role": "user", "content": "Thanks!"},
]
TEXTS = ["Hello world!", "Emoji 😀🎉 and 中文测试", " spaces  here ", "<|im_start|>user\nhi<|im_end|>", ""]


def write_folder(path, tokenizer_config: dict, generation_config: dict | None = None, config: dict | None = None,
                 bos: bool = False):
    path.mkdir(exist_ok=True)
    tok = byte_level_bpe()
    if bos:  # Llama style: the tokenizer's post-processor puts <s> first
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    for name, data in (("generation_config.json", generation_config), ("config.json", config)):
        if data is not None:
            (path / name).write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def chatml_folder(tmp_path_factory):
    return write_folder(
        tmp_path_factory.mktemp("chatml"),
        {"chat_template": CHATML, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
         "bos_token": None, "tokenizer_class": "PreTrainedTokenizerFast"},
        generation_config={"eos_token_id": [2, 0]},
        config={"eos_token_id": 0, "bos_token_id": 3},
    )


@pytest.fixture(scope="module")
def bos_folder(tmp_path_factory):
    # Llama-style: a BOS token added by the post-processor and written by the chat template.
    return write_folder(
        tmp_path_factory.mktemp("bos"),
        {"bos_token": {"__type": "AddedToken", "content": "<s>", "special": True}, "eos_token": "<|endoftext|>",
         "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}",
         "tokenizer_class": "PreTrainedTokenizerFast"},
        bos=True,
    )


@pytest.fixture(scope="module", params=["chatml", "bos"])
def both(request, chatml_folder, bos_folder):
    folder = chatml_folder if request.param == "chatml" else bos_folder
    return Tokenizer.from_pretrained(folder), transformers.PreTrainedTokenizerFast.from_pretrained(str(folder))


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_matches_transformers(both, text, add_special_tokens):
    ours, ref = both
    assert ours.encode(text, add_special_tokens) == ref.encode(text, add_special_tokens=add_special_tokens)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("skip", [True, False])
def test_decode_matches_transformers(both, text, skip):
    ours, ref = both
    ids = ref.encode(text)
    assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(both, add_generation_prompt):
    ours, ref = both
    expected = ref.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt) == expected
    ids = ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=True)
    assert ids == ref.encode(expected, add_special_tokens=False)


def test_bos_from_the_post_processor(bos_folder):
    tok = Tokenizer.from_pretrained(bos_folder)
    assert tok.bos_token_id == tok.token_to_id("<s>")
    assert tok.encode("hi")[0] == tok.bos_token_id and tok.encode("hi", add_special_tokens=False)[0] != tok.bos_token_id
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]).startswith("<s>[user] x")


def test_special_token_ids_from_all_configs(chatml_folder):
    tok = Tokenizer.from_pretrained(chatml_folder)
    im_end, eot = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    assert (im_end, eot) == (2, 0)
    assert tok.eos_token_ids == (2, 0) and tok.eos_token_id == 2  # union, tokenizer's own first
    assert tok.pad_token_id == eot
    assert tok.bos_token_id == 3  # no bos_token in the tokenizer config: config.json's id
    assert tok.vocab_size == 400


def test_template_helpers_and_sandbox(tmp_path):
    template = (
        "{% if messages|length == 0 %}{{ raise_exception('need a message') }}{% endif %}"
        "{{ strftime_now('%Y') }}|{{ messages|tojson }}|{{ extra }}"
    )
    tok = Tokenizer.from_pretrained(write_folder(tmp_path / "t", {"chat_template": template}))
    out = tok.apply_chat_template([{"role": "user", "content": "<é>"}], extra="x")
    year, data, extra = out.split("|")
    assert year.isdigit() and len(year) == 4
    assert json.loads(data) == [{"role": "user", "content": "<é>"}] and "<é>" in data  # no HTML escaping
    assert extra == "x"
    with pytest.raises(jinja2.exceptions.TemplateError, match="need a message"):
        tok.apply_chat_template([])
    evil = Tokenizer.from_pretrained(write_folder(tmp_path / "e", {"chat_template": "{{ ''.__class__.__mro__ }}"}))
    with pytest.raises(jinja2.exceptions.SecurityError):
        evil.apply_chat_template(MESSAGES)


def test_chat_template_jinja_file_and_named_list(tmp_path):
    folder = write_folder(tmp_path / "f", {"chat_template": [{"name": "default", "template": "D"},
                                                             {"name": "tool_use", "template": "T"}]})
    assert Tokenizer.from_pretrained(folder).apply_chat_template(MESSAGES) == "D"
    (folder / "chat_template.jinja").write_text("J{{ messages|length }}")
    assert Tokenizer.from_pretrained(folder).apply_chat_template(MESSAGES) == "J4"


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path / "empty")
    tok = Tokenizer.from_pretrained(write_folder(tmp_path / "plain", {}))
    with pytest.raises(ValueError, match="has no chat template"):
        tok.apply_chat_template(MESSAGES)
    bad = write_folder(tmp_path / "bad", {"chat_template": "{% for %}"})
    with pytest.raises(ValueError, match="syntax error"):
        Tokenizer.from_pretrained(bad).apply_chat_template(MESSAGES)
    (tmp_path / "plain" / "generation_config.json").write_text('{"eos_token_id": "x"}')
    with pytest.raises(ValueError, match="int or a list of ints"):
        Tokenizer.from_pretrained(tmp_path / "plain")


def test_falls_back_to_transformers_without_tokenizer_json(tmp_path):
    folder = tmp_path / "gpt2style"
    folder.mkdir()
    byte_level_bpe().model.save(str(folder))  # vocab.json + merges.txt only
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer",
                                                              "eos_token": "<|endoftext|>"}))
    tok = Tokenizer.from_pretrained(folder)
    fast = byte_level_bpe()
    text = "Hello world! 😀 中文"
    assert tok.encode(text, add_special_tokens=False) == fast.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text
    assert tok.eos_token_ids == (fast.token_to_id("<|endoftext|>"),)
