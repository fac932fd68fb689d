"""Tool calling through the official openai client: grammar-constrained calls, the round trip, streaming deltas.

The tiny served model's ChatML template does not read ``tools``, so these go through the generic format.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from inference_pio.server.tool_calls import HERMES, LLAMA, ToolCallStream, parse
from tests.server.chat_checkpoint import write_chat_checkpoint
from tests.server.conftest import API_KEY, MODEL
from tests.server.serving import running_pio_serve

CONTEXT = 1536  # the tiny tokenizer spells most words letter by letter: the tools' schemas take ~800 tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The tiny model served with room for the tools' instructions in its context."""
    checkpoint = write_chat_checkpoint(tmp_path_factory.mktemp("tools"), max_position_embeddings=CONTEXT)
    args = ["--name", MODEL, "--api-key", API_KEY, "--dtype", "float32", "--max-seq-len", str(CONTEXT)]
    with running_pio_serve(checkpoint, *args) as base:
        yield type("Server", (), {"base": base, "v1": f"{base}/v1"})

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                             "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 14}},
        "required": ["zone"]}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def assert_valid_calls(calls):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_named_function_round_trip(client):
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert_valid_calls([call])
    # The call and its result go back into the conversation; the model then answers in text.
    messages = ASK + [choice.message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none",
                                           max_tokens=8, temperature=0)
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].finish_reason in ("stop", "length")
    # The call and the result are in the prompt (how exactly: test_tools_calls_and_results_reach_the_prompt).
    alone = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=1)
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + len(call.function.arguments)


@pytest.mark.parametrize("parallel", [True, False])
def test_streamed_deltas_join_to_the_non_streamed_calls(client, parallel):
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=150, temperature=1.0,
                  seed=3, parallel_tool_calls=parallel)
    whole = client.chat.completions.create(**kwargs).choices[0]
    assert_valid_calls(whole.message.tool_calls)
    if not parallel:
        assert len(whole.message.tool_calls) == 1
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for d in c.delta.tool_calls or []:
                if d.id is not None:  # the first fragment of a call names it
                    assert d.index not in calls and d.function.arguments == ""
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
                else:
                    calls[d.index]["arguments"] += d.function.arguments
    assert finish == whole.finish_reason == "tool_calls"
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == \
        [(t.function.name, t.function.arguments) for t in whole.message.tool_calls]


def test_auto_answers_text_or_valid_calls(client):
    out = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=40, temperature=1.0,
                                         seed=0, n=3)
    for choice in out.choices:
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            assert_valid_calls(choice.message.tool_calls)
        else:
            assert choice.message.content and "<tool_call>" not in choice.message.content


@pytest.mark.parametrize("change, param", [
    (lambda b: b["tools"][0]["function"].pop("name"), "tools.0.function.name"),
    (lambda b: b["tools"][0]["function"].update(parameters={"type": "string"}), "tools.0.function"),
    (lambda b: b["tools"][0]["function"].update(parameters={"type": "object", "properties": {"a": {"type": 5}}}),
     "tools[0].function.parameters"),
    (lambda b: b.update(tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
    (lambda b: b.update(tools=None, tool_choice="required"), "tool_choice"),
    (lambda b: b["tools"].append(b["tools"][0]), "tools"),
])
def test_bad_tool_definitions_are_400_naming_the_field(server, change, param):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, "tools": json.loads(json.dumps(TOOLS))}
    change(body)
    r = httpx.post(f"{server.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


# ----- the format's parser and the prompt (no server needed) -----


@pytest.mark.parametrize("fmt", [HERMES, LLAMA])
def test_stream_parser_agrees_with_the_whole_parse_at_every_split(fmt):
    args = '{"city": "Pa}r\\"is", "n": [1, {"a": 2}]}'
    text = f"Let me look. {fmt.begin('get_weather')}{args}{fmt.end} {fmt.begin('get_time')}{{}}{fmt.end}"
    whole = parse(text, fmt)
    assert [(c.name, c.arguments) for c in whole.calls] == [("get_weather", args), ("get_time", "{}")]
    for step in (1, 2, 5, 11):
        stream, deltas = ToolCallStream(fmt), []
        pieces = [text[i:i + step] for i in range(0, len(text), step)]
        for i, piece in enumerate(pieces):
            deltas.append(stream.feed(piece, final=i == len(pieces) - 1))
        assert "".join(d.get("content", "") for d in deltas) == whole.content == "Let me look.  "
        joined = {}
        for f in (f for d in deltas for f in d.get("tool_calls", [])):
            joined.setdefault(f["index"], [f["function"].get("name"), ""])[1] += f["function"]["arguments"]
        assert [tuple(v) for _, v in sorted(joined.items())] == [(c.name, c.arguments) for c in whole.calls]


def test_text_that_only_looks_like_a_call_stays_content():
    text = "a <tool_call> is written like <tool_call>{...}</tool_call>"
    assert parse(text, HERMES).content == text and not parse(text, HERMES).calls


QWEN_LIKE = ("{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>"
             "<|im_end|>\n"
             "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}"
             "{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
             "{% elif m.role == 'tool' %}<tool_response>{{ m.content }}</tool_response>"
             "{% else %}{{ m.content }}{% endif %}"
             "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _rendered(template, body):
    from inference_pio.server.schemas import ChatCompletionRequest
    from inference_pio.server.tools import render_messages, tool_setup
    from inference_pio.tokenizer import compile_chat_template

    req = ChatCompletionRequest.model_validate(body)
    setup = tool_setup(req, template)
    messages, variables = render_messages(req.messages, setup)
    return setup, compile_chat_template(template).render(messages=messages, add_generation_prompt=True,
                                                          **{"tools": None, **variables})


CONVERSATION = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"}]


@pytest.mark.parametrize("template, in_template", [(QWEN_LIKE, True), (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}", False)])
def test_tools_calls_and_results_reach_the_prompt(template, in_template):
    setup, text = _rendered(template, {"model": MODEL, "messages": CONVERSATION, "tools": TOOLS})
    assert setup.in_template is in_template and setup.fmt is HERMES
    assert json.dumps(WEATHER) in text  # the schema is shown to the model
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>' in text
    assert "<tool_response>" in text and "21 degrees" in text
    if not in_template:  # the generic format: its instructions in a system message, the result as a user turn
        assert text.startswith("<|im_start|>system\n# Tools") and "<|im_start|>user\n<tool_response>" in text


def test_llama_style_template_gets_the_llama_format():
    from inference_pio.server.tools import template_format

    llama = ('{% if tools %}Respond in the format {"name": function name, "parameters": dictionary}.'
             '{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}'
             '{% for m in messages %}{{ m.content }}{% endfor %}')
    assert template_format(llama) is LLAMA
    assert template_format("{% for m in messages %}{{ m.content }}{% endfor %}") is None


def test_auto_constrains_a_call_from_its_trigger(tmp_path):
    """With ``auto`` the text is free, but once it reaches ``<tool_call>`` the rest is a valid call,
    whatever the logits say (random logits stand in for a model)."""
    import torch

    from inference_pio.server.schemas import ChatCompletionRequest
    from inference_pio.server.tools import tool_setup
    from inference_pio.services.structured import GrammarBackend, GrammarLogitsProcessor
    from inference_pio.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(write_chat_checkpoint(tmp_path))
    backend = GrammarBackend(tokenizer, 512)
    setup = tool_setup(ChatCompletionRequest.model_validate({"model": MODEL, "messages": ASK, "tools": TOOLS}), None)
    compiled = backend.compile_structural_tag(setup.structural_tag())
    forced = tokenizer.encode("Sure. <tool_call>", add_special_tokens=False)
    for seed in range(4):
        processor, out = GrammarLogitsProcessor(compiled, backend), []
        generator = torch.Generator().manual_seed(seed)
        while len(out) < 300:
            logits = torch.randn(512, generator=generator)
            if len(out) < len(forced):
                logits[forced[len(out)]] = 100.0  # the "model" writes the trigger
            processor(out, logits)
            token = int(logits.argmax())
            if token in backend.stop_token_ids:
                break
            out.append(token)
        parsed = parse(tokenizer.decode(out), HERMES)
        # (Text may follow a call: auto leaves the model free outside calls.)
        assert parsed.content.startswith("Sure. ") and len(parsed.calls) >= 1, tokenizer.decode(out)
        for call in parsed.calls:
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


@pytest.mark.slow
def test_named_call_on_smollm2_validates():
    """The real default model (its template does not read tools: the generic format) answers a named call
    whose arguments parse and validate."""
    from openai import OpenAI

    from inference_pio.defaults import DefaultModelMissingError, default_model_path

    try:
        path = default_model_path()
    except DefaultModelMissingError as e:
        pytest.skip(str(e))
    with running_pio_serve(path, "--name", MODEL, "--max-seq-len", "2048") as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
        out = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, max_tokens=60, temperature=0,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    [call] = out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert_valid_calls([call])


def test_a_function_without_parameters_reaches_the_template_with_an_empty_schema():
    template = ("{% for t in tools %}{{ t.function.name }}({{ t.function.parameters.properties | list | join(',') }})"
                "{% endfor %}<tool_call>{% for m in messages %}{{ m.content }}{% endfor %}")
    body = {"model": MODEL, "messages": ASK, "tools": [{"type": "function", "function": {"name": "ping"}}] + TOOLS}
    setup, text = _rendered(template, body)
    assert setup.in_template and text.startswith("ping()get_weather(city,unit)get_time(zone)")
