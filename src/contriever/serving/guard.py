"""The guard: a pure ASGI middleware in front of the app.

It counts every answer in the metrics; refuses cross-origin requests and foreign Host headers (403),
requests without the API key when the server has one (401; `/health` stays open for probes, and CORS
preflights carry no credentials), query strings that are not UTF-8 (400), and bodies over
`max_body_bytes` (413) or not UTF-8 (400); and hands POST bodies to FastAPI as JSON whatever their
Content-Type, so `curl -d '{...}'` works.
"""

from __future__ import annotations

import hmac
import time
from urllib.parse import unquote_to_bytes

from contriever.serving.errors import error_response
from contriever.serving.metrics import Metrics
from contriever.serving.service import ServeSettings

OPEN_PATHS = ("/health",)  # answered without the API key: liveness probes carry none


class Guard:
    def __init__(self, app, *, settings: ServeSettings, metrics: Metrics, known_paths: tuple[str, ...]):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.known_paths = known_paths
        self.key = settings.api_key.encode() if settings.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        method = scope["method"]

        async def send_counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            path = scope.get("path", "")
            endpoint = getattr(route, "path", None) or (path if path in self.known_paths else "other")
            self.metrics.observe_request(endpoint, method, status, time.perf_counter() - start)

    async def _handle(self, scope, receive, send):
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        problem = self._refusal(scope, headers)
        if problem is not None:
            return await error_response(*problem)(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.settings.max_body_bytes:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            message = (
                f"the request body is not valid UTF-8 (byte 0x{body[error.start]:02x} at offset {error.start}); "
                "send JSON encoded as UTF-8"
            )
            return await error_response(400, message, code="invalid_encoding")(scope, receive, send)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"] + [
            (b"content-type", b"application/json")
        ]
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        limit = self.settings.max_body_bytes
        message = f"the request body is larger than {limit:,} bytes; send fewer or shorter texts per request"
        return await error_response(413, message, headers={"Connection": "close"})(scope, receive, send)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple | None:
        """(status, message, param, code, headers) of a refusal, or None to let the request in."""
        host = headers.get("host", "")
        allowed = self.settings.allowed_hosts
        if allowed is not None and _hostname(host) not in allowed:
            return 403, f"requests for host {host!r} are refused; this server answers to {', '.join(allowed)}"
        origin = headers.get("origin")
        cross_origin = origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}"
        if (
            cross_origin
            and origin not in self.settings.cors_origins
            and "*" not in self.settings.cors_origins
        ):
            return 403, (
                f"cross-origin request from {origin} refused; start the server with --cors-origin {origin} "
                "to allow pages from that origin"
            )
        if self._needs_key(scope) and not _key_matches(headers.get("authorization", ""), self.key):
            return (
                401,
                "missing or wrong API key: send the header `Authorization: Bearer <key>` "
                "(the key the server was started with, --api-key)",
                None,
                "invalid_api_key",
                {"WWW-Authenticate": "Bearer"},
            )
        raw_query = scope.get("query_string", b"")
        if raw_query:
            try:
                unquote_to_bytes(raw_query.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError as error:
                return (
                    400,
                    (
                        f"the query string is not valid UTF-8 after percent-decoding (byte {error.start}); "
                        "percent-encode the text as UTF-8"
                    ),
                    None,
                    "invalid_encoding",
                )
        return None

    def _needs_key(self, scope) -> bool:
        return self.key is not None and scope["method"] != "OPTIONS" and scope.get("path") not in OPEN_PATHS


def _key_matches(authorization: str, key: bytes) -> bool:
    scheme, _, token = authorization.partition(" ")
    # hmac.compare_digest takes the same time wherever the first difference is
    return hmac.compare_digest(token.strip().encode("utf-8", "replace"), key) and scheme.lower() == "bearer"


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
