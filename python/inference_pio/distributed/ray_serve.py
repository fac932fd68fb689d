"""N engine replicas as Ray Serve deployments behind one OpenAI-compatible ingress.

Each replica (``engine-0`` ... ``engine-{N-1}``, one Serve deployment each so the ingress can pick
one) hosts the very FastAPI app of ``pio serve`` over its own engine; the ingress chooses a replica by
prompt prefix (``routing.PrefixRouter``) and passes the HTTP request through (``asgi_call``), so
routes, errors, auth and streaming are those of ``pio serve``. Ray restarts a replica that dies; the
requests it held fail with a 503 (or an SSE error event mid-stream) naming the replica.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RayError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from prometheus_client import CollectorRegistry, Counter

from ..server.body_limit import DEFAULT_MAX_REQUEST_BYTES
from ..server.errors import error_response
from .asgi_call import call_asgi
from .metrics_merge import merge_replica_metrics
from .routing import PrefixRouter, routing_text
from .spec import ReplicaSpec

log = logging.getLogger(__name__)

REPLICA_HEADER = "x-pio-replica"
APP_NAME = "inference-pio"
_REPLICA_DOWN = (RayActorError, ActorUnavailableError)
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class EngineReplica:
    """One engine and the ``pio serve`` app over it."""

    def __init__(self, spec: ReplicaSpec):
        self._state = spec.state()
        self._app = spec.app(self._state)

    async def handle(self, method: str, path: str, query: bytes, headers: list[tuple[str, str]], body: bytes):
        async for part in call_asgi(self._app, method, path, query, headers, body):
            yield part

    async def metrics(self) -> str:
        return b"".join([p async for p in call_asgi(self._app, "GET", "/metrics") if isinstance(p, bytes)]).decode()

    def __del__(self):  # Serve calls it when the replica is shut down
        state = getattr(self, "_state", None)
        for served in state.served() if state is not None else ():
            served.model.close()


class Ingress:
    """The one HTTP entry: routes each request to a replica and relays its answer."""

    def __init__(self, replicas: list, policy: str = "prefix", max_inflight: int = 32, imbalance: int = 4,
                 max_request_bytes: int | None = None):
        self._replicas = replicas
        self._max_bytes = max_request_bytes or DEFAULT_MAX_REQUEST_BYTES
        self._router = PrefixRouter(len(replicas), policy, max_inflight=max_inflight, imbalance=imbalance)
        self._registry = CollectorRegistry()
        self._routed = Counter("pio_routed_requests", "requests routed, by replica and reason "
                               "(prefix: its cached prefix; no_prefix / saturated: least loaded)",
                               ["replica", "reason"], registry=self._registry)
        self._failed = Counter("pio_replica_failures", "requests that failed because their replica died",
                               ["replica"], registry=self._registry)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        if path == "/metrics":
            return Response(await self._metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")
        body = await self._body(request)
        if body is None:  # the replicas would refuse it too: the ingress never buffers more than the limit
            return error_response(413, f"the request body is larger than this server accepts ({self._max_bytes} "
                                       "bytes; see pio serve --max-request-bytes)", code="request_too_large")
        replica, reason = self._router.choose(routing_text(path, body))
        self._routed.labels(str(replica), reason).inc()
        headers = [(k, v) for k, v in request.headers.items() if k not in _HOP_HEADERS]
        stream = self._replicas[replica].options(stream=True).handle.remote(
            request.method, path, request.url.query.encode(), headers, body)
        try:
            start = await stream.__anext__()
        except BaseException as e:
            self._router.release(replica)
            stream.cancel()
            if isinstance(e, RayError):
                return self._failure(replica, e)
            raise
        out_headers = {k: v for k, v in start["headers"] if k.lower() not in ("content-length", "transfer-encoding")}
        out_headers[REPLICA_HEADER] = str(replica)
        if not out_headers.get("content-type", "").startswith("text/event-stream"):
            try:  # a whole body, so a replica dying midway is a clean error rather than a cut-off body
                content = b"".join([chunk async for chunk in stream])
            except RayError as e:
                return self._failure(replica, e)
            finally:
                self._router.release(replica)
            return Response(content, status_code=start["status"], headers=out_headers)
        return StreamingResponse(self._relay(stream, replica), status_code=start["status"], headers=out_headers)

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None as soon as it is known to pass ``max_request_bytes``."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            return None
        chunks, seen = [], 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > self._max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _relay(self, stream, replica: int):
        try:
            async for chunk in stream:
                yield chunk
        except RayError as e:
            body = self._failure(replica, e).body
            yield b"data: " + body + b"\n\n"
        finally:
            self._router.release(replica)
            stream.cancel()  # the client went away: the replica's app sees the disconnect and aborts

    def _failure(self, replica: int, error: RayError) -> Response:
        if isinstance(error, _REPLICA_DOWN):
            self._failed.labels(str(replica)).inc()
            self._router.forget(replica)
            message = (f"replica {replica} died while serving this request; Ray is replacing it, "
                       f"retry the request")
            status, code = 503, "replica_failed"
        else:
            log.error("replica %d failed: %s", replica, error)
            message, status, code = f"replica {replica} failed: {type(error).__name__}", 500, "replica_error"
        response = error_response(status, message, "server_error", code=code)
        response.headers[REPLICA_HEADER] = str(replica)
        return response

    async def _metrics(self) -> bytes:
        async def scrape(i):
            try:
                return i, await asyncio.wait_for(self._replicas[i].metrics.remote(), timeout=10)
            except (RayError, asyncio.TimeoutError):
                return i, None  # a replica being replaced is left out of this scrape

        pages = dict(await asyncio.gather(*(scrape(i) for i in range(len(self._replicas)))))
        return merge_replica_metrics({i: p for i, p in pages.items() if p is not None}, self._registry)


def build_app(spec: ReplicaSpec, replicas: int, policy: str = "prefix", cpus_per_replica: float = 1.0,
              max_inflight: int = 32, imbalance: int = 4):
    """The Serve application: ``replicas`` engine deployments and the ingress bound to them."""
    if replicas < 1:
        raise ValueError(f"--replicas must be at least 1, got {replicas}")
    engines = [serve.deployment(EngineReplica, name=f"engine-{i}", num_replicas=1,
                                ray_actor_options={"num_cpus": cpus_per_replica},
                                max_ongoing_requests=max(64, 4 * max_inflight)).bind(spec)
               for i in range(replicas)]
    ingress = serve.deployment(Ingress, name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0},
                               max_ongoing_requests=10_000)
    return ingress.bind(engines, policy, max_inflight, imbalance, spec.max_request_bytes)


def serve_replicas(spec: ReplicaSpec, replicas: int, host: str, port: int, ray_address: str | None = None,
                   log_level: str = "info", **options) -> None:
    """Starts a local Ray instance (or joins ``ray_address``) and serves on ``host:port`` until interrupted
    (Ctrl-C or SIGTERM); then removes the application, and stops Ray only if it started it."""
    import signal
    import sys

    import ray

    ray.init(address=ray_address or "local")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the cleanup below runs on SIGTERM too
    verbose = log_level.lower() in ("debug", "trace")  # uvicorn's levels; trace is not Python's
    logging_config = {"log_level": "DEBUG" if verbose else log_level.upper(), "enable_access_log": verbose}
    try:
        serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
        serve.run(build_app(spec, replicas, **options), name=APP_NAME, route_prefix="/", blocking=True,
                  logging_config=logging_config)
    except KeyboardInterrupt:
        pass
    finally:
        if ray_address:  # a shared cluster: leave its Serve instance and other applications running
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
        ray.shutdown()
