"""A chat request's tools: checks, how the prompt shows them, and the grammar that constrains the calls.

Where the model's chat template reads ``tools`` and writes a call format we know (Qwen2.5 / Hermes
``<tool_call>`` tags, Llama 3.1 / 3.2 JSON with ``"parameters"``), the template renders the tools,
the earlier calls and the tool results. Otherwise (SmolLM2, ChatML templates, and Mistral, whose
``[TOOL_CALLS]`` marker is a special token that text output drops) the generic format applies: a
system-message block (:data:`GENERIC_INSTRUCTIONS`) lists the functions' JSON schemas and asks for
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; earlier calls are written back that way
in the assistant's message and tool results become user messages in ``<tool_response>`` tags.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from ..engine.output_schema import OutputSchema, SchemaError
from ..engine.grammar import GrammarBackend, GrammarLogitsProcessor
from .errors import APIError
from .tool_calls import HERMES, LLAMA, ToolFormat
from .tool_grammar import structural_tag

GENERIC_INSTRUCTIONS = """# Tools

You may call one or more of these functions to help with the user's request. Their JSON schemas:
<tools>
{tools}
</tools>

To call a function, answer with a JSON object holding its name and arguments inside <tool_call></tool_call> tags:
<tool_call>{{"name": <function-name>, "arguments": <arguments-json-object>}}</tool_call>"""


@dataclass(frozen=True)
class ToolSetup:
    """What a chat request asks of tools: ``choice`` is "none", "auto", "required" or "function"."""

    functions: list  # schemas.FunctionDefinition, the ones the model may call (the named one only, if named)
    all_functions: list
    choice: str
    parallel: bool
    fmt: ToolFormat
    in_template: bool  # the chat template renders tools (else the generic format)

    @property
    def active(self) -> bool:
        return self.choice != "none" and bool(self.functions)

    def structural_tag(self) -> dict:
        return structural_tag(self.fmt, self.functions, self.choice, self.parallel)


def template_format(template: str | None) -> ToolFormat | None:
    """The call format of a chat template that renders tools itself, or None (then: the generic format)."""
    if not template or not _reads_tools(template):
        return None
    if "<tool_call>" in template:
        return HERMES
    if '"parameters"' in template:  # Llama 3.1 / 3.2: 'Respond ... {"name": function name, "parameters": ...}'
        return LLAMA
    return None


@functools.lru_cache(maxsize=8)
def _reads_tools(template: str) -> bool:
    """Parsing the template takes a while (milliseconds for Llama 3.1's) and every chat request asks: cached."""
    import jinja2
    from jinja2 import meta

    try:
        return "tools" in meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError:
        return False


def tool_setup(req, chat_template: str | None) -> ToolSetup:
    """Checks ``tools`` / ``tool_choice`` (400 naming the field) and resolves the format."""
    functions = [t.function for t in req.tools or []]
    for i, f in enumerate(functions):
        if f.parameters is not None:
            try:
                OutputSchema.of(f.parameters)
            except SchemaError as e:
                where = f"tools[{i}].function.parameters"
                raise APIError(400, f"{where}: {e}", param=where) from e
    names = [f.name for f in functions]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise APIError(400, f"tools: the function name {duplicate!r} is given twice", param="tools")
    choice = req.tool_choice or ("auto" if functions else "none")
    chosen = functions
    if not isinstance(choice, str):
        if choice.function.name not in names:
            raise APIError(400, f"tool_choice names the function {choice.function.name!r}, which is not in tools "
                                f"({', '.join(names) or 'none given'})", param="tool_choice")
        chosen = [functions[names.index(choice.function.name)]]
        choice = "function"
    if choice in ("required", "function") and not functions:
        raise APIError(400, f"tool_choice {choice!r} needs tools", param="tool_choice")
    if choice != "none" and functions and req.response_format is not None and req.response_format.type != "text":
        raise APIError(400, "response_format cannot be combined with tools (unless tool_choice is 'none')",
                       param="response_format")
    fmt = template_format(chat_template)
    return ToolSetup(chosen, functions, choice, req.parallel_tool_calls, fmt or HERMES, fmt is not None)


def render_messages(messages, setup: ToolSetup) -> tuple[list[dict], dict]:
    """Template messages and extra template variables (``tools``) for the chat template."""
    out: list[dict] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        entry = {"role": role, "content": m.text()}
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for j, call in enumerate(m.tool_calls):
                try:
                    arguments = json.loads(call.function.arguments)
                except ValueError as e:
                    where = f"messages[{i}].tool_calls[{j}].function.arguments"
                    raise APIError(400, f"{where}: not JSON ({e})", param=where) from e
                call_names[call.id] = call.function.name
                calls.append({"id": call.id, "type": "function",
                              "function": {"name": call.function.name, "arguments": arguments}})
            if setup.in_template:
                entry["tool_calls"] = calls
            else:
                written = "".join(_generic_call(c["function"]) for c in calls)
                entry["content"] = entry["content"] + written
        elif m.role == "tool":
            if setup.in_template:
                entry["tool_call_id"] = m.tool_call_id
                if m.tool_call_id in call_names:
                    entry["name"] = call_names[m.tool_call_id]
            else:
                entry = {"role": "user", "content": f"<tool_response>\n{m.text()}\n</tool_response>"}
        out.append(entry)
    if not (setup.choice != "none" and setup.all_functions):
        return out, {}
    # Templates read parameters.properties: a function without arguments gets an empty object schema.
    tools = [{"type": "function", "function": {**f.model_dump(exclude_none=True), "parameters": f.parameters or
                                               {"type": "object", "properties": {}}}} for f in setup.all_functions]
    if setup.in_template:
        return out, {"tools": tools}
    block = GENERIC_INSTRUCTIONS.format(tools="\n".join(json.dumps(t) for t in tools))
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{block}" if out[0]["content"] else block}
    else:
        out.insert(0, {"role": "system", "content": block})
    return out, {}


def _generic_call(function: dict) -> str:
    return f"<tool_call>{json.dumps({'name': function['name'], 'arguments': function['arguments']})}</tool_call>"


def tool_processors(model, setup: ToolSetup, max_tokens: int):
    """A factory of fresh per-choice grammar processors for the calls (compiling takes a while: not on the loop).

    A forced call (``required``, a named function) gets the token budget, so it is closed in time; with
    ``auto`` the answer is mostly text, which the budget's closing rule would cut short with a stop.
    """
    try:
        backend = GrammarBackend.for_model(model)
        compiled = backend.compile_structural_tag(setup.structural_tag())
    except SchemaError as e:
        raise APIError(400, f"tools: {e}", param="tools") from e
    except ValueError as e:  # a tokenizer without EOS, a model without tokenizer
        raise APIError(400, f"tools: {e}", param="tools") from e
    budget = None if setup.choice == "auto" else max_tokens
    return lambda: (GrammarLogitsProcessor(compiled, backend, budget),)


def chat_template_of(model) -> str | None:
    return getattr(getattr(model.plugin, "tokenizer", None), "chat_template", None)
