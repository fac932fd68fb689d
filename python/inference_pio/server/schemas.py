"""Request bodies of the OpenAI-compatible endpoints (pydantic; a failed check becomes a 400)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..engine.sampler import MAX_TOP_K, SEED_RANGE
from .request_checks import check_json

MAX_N = 16
MAX_STOP = 4

PositiveTokens = Annotated[int, Field(ge=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class _Body(_Request):
    """A whole request body: checked for invalid Unicode and runaway nesting before its fields."""

    @model_validator(mode="before")
    @classmethod
    def _sane_json(cls, data):
        check_json(data)
        return data


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Body):
    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)] | None = None
    seed: Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1] - MAX_N)] | None = None  # choice i uses seed + i
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    repetition_penalty: Annotated[float, Field(gt=0, le=100)] = 1.0  # vLLM's extension
    top_k: Annotated[int, Field(ge=0, le=MAX_TOP_K)] | None = None  # vLLM's extension
    ignore_eos: bool = False  # vLLM's extension
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self):
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty and frequency_penalty are not supported; use repetition_penalty")
        if isinstance(self.stop, str) and not self.stop:
            raise ValueError("stop must not be empty")
        return self

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[int], Field(min_length=1)] | Annotated[list[str], Field(min_length=1)] \
        | Annotated[list[list[int]], Field(min_length=1)]
    max_tokens: PositiveTokens | None = 16
    echo: bool = False
    logprobs: int | None = None

    @model_validator(mode="after")
    def _no_logprobs(self):
        if self.logprobs:
            raise ValueError("logprobs are not supported")
        return self


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class JSONSchemaFormat(_Request):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self):
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: PositiveTokens | None = None
    max_completion_tokens: PositiveTokens | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None

    @model_validator(mode="after")
    def _no_logprobs(self):
        if self.logprobs:
            raise ValueError("logprobs are not supported")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(_Body):
    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
