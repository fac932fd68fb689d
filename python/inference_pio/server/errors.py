"""OpenAI-style error bodies: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status.

Every error leaves the server as such a body: a failure nobody foresaw is a 500 of type ``server_error``
(the HTTP server logs its traceback), never a plain-text page or a reset connection.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import MissingExtraError
from .request_checks import FieldError


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.param, self.code)


def error_response(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    return JSONResponse(_body(message, type, param, code), status_code=status)


def _body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        return str(cause), cause.param
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    return (f"{param}: {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(MissingExtraError)
    async def _missing_extra(request: Request, exc: MissingExtraError):
        # The request is fine; this installation lacks the feature (e.g. response_format without xgrammar).
        return error_response(501, str(exc), "server_error", code="missing_extra")

    @app.exception_handler(Exception)
    async def _unforeseen(request: Request, exc: Exception):
        # Starlette sends this, then re-raises the exception to the HTTP server, which logs its traceback.
        return server_error(exc)


def server_error(exc: BaseException) -> JSONResponse:
    """A 500 for a failure of the server (not of the request): its type and message, no traceback."""
    return JSONResponse(error_body(exc), status_code=500)


def error_body(exc: BaseException) -> dict:
    """The OpenAI-style body of any exception (an APIError keeps its own fields)."""
    if isinstance(exc, APIError):
        return _body(exc.message, exc.type, exc.param, exc.code)
    return _body(f"the server failed to answer: {type(exc).__name__}: {exc}"[:1000], "server_error")
