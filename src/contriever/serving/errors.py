"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for every failure.

Status codes: 400 for a request whose shape is wrong (not JSON, not UTF-8, a field of the wrong type,
a missing or unknown field: what OpenAI answers 400), 401 a missing or wrong API key, 403 a refused
origin or host, 404, 405, 413 a body (or, with `truncate=false`, a text) too large, 422 a value of the
right type that the server cannot take (k out of range, an empty text, an unknown mode, token ids,
`dimensions` other than the model's), 429 the model's queue is full (with `Retry-After`), 503 while
shutting down. `code` is always a string naming the fault; `param` names the offending element the
way a client writes it (`input[1]`, `queries[0]`, `k`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from contriever.serving.batcher import QueueFull, ShuttingDown

log = logging.getLogger("contriever.serve")

CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid_value",
    429: "queue_full",
    500: "internal_error",
    503: "shutting_down",
}
TYPES = {401: "authentication_error", 429: "rate_limit_error"}
TOKEN_ARRAY_HINT = (
    "input holds token ids; this server embeds text only. LangChain's OpenAIEmbeddings sends token ids "
    "unless you set check_embedding_ctx_length=False; send the strings themselves"
)
TYPE_LABELS = {"str", "int", "float", "bool", "list", "dict", "none"}  # pydantic's union branches in `loc`


class ErrorDetail(BaseModel):
    message: str = Field(description="what is wrong and what to do, in one sentence")
    type: str = Field(
        description="invalid_request_error, authentication_error, rate_limit_error or server_error"
    )
    param: str | None = Field(description="the offending field or element, as `input[1]`; null if none")
    code: str = Field(description="the fault, as a name: invalid_request, invalid_value, queue_full, ...")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code, self.headers = code, headers


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None
) -> JSONResponse:
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code or CODES.get(status, "error"),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def documented(*statuses: int) -> dict:
    """`responses=` for a route: each status with the error body it really has."""
    described = {
        400: "malformed request: not JSON, not UTF-8, or a field of the wrong type",
        401: "missing or wrong API key (servers started with --api-key)",
        403: "cross-origin request or foreign Host header refused",
        404: "no such model",
        413: "request body (or a text, with truncate=false) too large",
        422: "a value the server cannot take",
        429: "the model's queue is full: retry after the Retry-After header's seconds",
        503: "the server is shutting down",
    }
    return {status: {"model": ErrorResponse, "description": described[status]} for status in statuses}


COMMON_ERRORS = (400, 401, 403, 422)


# ----- request validation errors: which status, which param -------------------------------------------
def param_name(loc: tuple) -> str | None:
    """('body', 'input', 'list[str]', 1) -> 'input[1]': the element as a client names it."""
    name = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in TYPE_LABELS or not str(part).isidentifier():
            continue  # a union branch such as `str` or `function-after[...]`, not a field
        else:
            name += f".{part}" if name else str(part)
    return name or None


def is_token_array(value) -> bool:
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return all(is_token_array(v) for v in value)
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def validation_problem(error: RequestValidationError) -> ApiError:
    errors = error.errors()
    body = getattr(error, "body", None)
    if isinstance(body, dict) and (is_token_array(body.get("input")) or is_token_array(body.get("inputs"))):
        field = "input" if "input" in body else "inputs"
        return ApiError(422, TOKEN_ARRAY_HINT, field, "token_ids_not_supported")
    first = max(errors, key=lambda e: len(e.get("loc", ())))  # the most specific of a union's errors
    kind = first.get("type", "")
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not valid JSON")
        return ApiError(400, f"the request body is not valid JSON ({reason})", None, "invalid_json")
    param = param_name(tuple(first.get("loc", ())))
    if kind == "missing" and param is None:
        return ApiError(400, "the request needs a JSON body", None, "missing_body")
    if kind == "extra_forbidden":
        return ApiError(400, f"unknown field {param!r}; see /docs for the fields", param, "unknown_field")
    value = first.get("input")
    shown = f" (got {value!r})" if isinstance(value, int | float | str) and len(repr(value)) <= 40 else ""
    location = "query parameter" if first.get("loc", ("",))[0] == "query" else "field"
    message = f"{location} {param or 'body'}: {first.get('msg', 'invalid value')}{shown}"
    return ApiError(400, message, param, "missing" if kind == "missing" else "invalid_type")


# ----- handlers --------------------------------------------------------------------------------------
async def _api_error(request: Request, error: ApiError):
    return error_response(error.status, error.message, error.param, error.code, error.headers)


async def _validation_error(request: Request, error: RequestValidationError):
    return await _api_error(request, validation_problem(error))


async def _http_error(request: Request, error: StarletteHTTPException):
    message = error.detail if isinstance(error.detail, str) else str(error.detail)
    if error.status_code == 404:
        message = f"no endpoint {request.url.path}; see /docs for the API"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /docs"
    return error_response(error.status_code, message, headers=getattr(error, "headers", None))


async def _queue_full(request: Request, error: QueueFull):
    headers = {"Retry-After": str(error.retry_after)}
    return error_response(429, str(error), code="queue_full", headers=headers)


async def _shutting_down(request: Request, error: ShuttingDown):
    return error_response(503, str(error))


async def _unexpected(request: Request, error: Exception):
    log.exception("error answering %s %s", request.method, request.url.path)
    return error_response(500, f"internal error ({type(error).__name__}); the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(ShuttingDown, _shutting_down)
    app.add_exception_handler(Exception, _unexpected)
