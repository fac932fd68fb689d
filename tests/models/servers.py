"""Real HTTP servers on 127.0.0.1 for the manager's tests: an Ollama-style registry serving a
store folder (with Range requests and a one-shot cut connection), run in a thread."""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

from .builders import OLLAMA_HOST


class RegistryState:
    def __init__(self, store: Path):
        self.store = store
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_next_blob_after: int | None = None  # send this many bytes of the next big blob, then hang up
        self.pause_s = 0.0  # between 8 KB pieces of a blob: keeps transfers in flight long enough to overlap
        self.lock = threading.Lock()


def _registry_handler(state: RegistryState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            with state.lock:
                state.requests.append((self.path, self.headers.get("Range")))
            manifest = re.fullmatch(r"/v2/([\w.-]+)/([\w.-]+)/manifests/([\w.-]+)", self.path)
            blob = re.fullmatch(r"/v2/([\w.-]+)/([\w.-]+)/blobs/sha256:([0-9a-f]{64})", self.path)
            if manifest:
                path = state.store / "manifests" / OLLAMA_HOST / manifest[1] / manifest[2] / manifest[3]
                return self._send_file(path, content_type="application/vnd.docker.distribution.manifest.v2+json")
            if blob:
                return self._send_file(state.store / "blobs" / f"sha256-{blob[3]}", ranged=True)
            self._status(404)

        def _status(self, code: int):
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send_file(self, path: Path, content_type: str = "application/octet-stream", ranged: bool = False):
            if not path.is_file():
                return self._status(404)
            data = path.read_bytes()
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "") if ranged else None
            if match:
                start = int(match[1])
                if start >= len(data):
                    return self._status(416)
            body = data[start:]
            self.send_response(206 if match else 200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            with state.lock:
                cut, state.cut_next_blob_after = (state.cut_next_blob_after, None) if ranged and len(body) > 1000 \
                    else (None, state.cut_next_blob_after)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            for start in range(0, len(body), 8192) if state.pause_s else ():
                self.wfile.write(body[start:start + 8192])
                self.wfile.flush()
                time.sleep(state.pause_s)
            if not state.pause_s:
                self.wfile.write(body)

    return Handler


@contextmanager
def serve(handler) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def ollama_registry(store: Path) -> Iterator[tuple[str, RegistryState]]:
    state = RegistryState(store)
    with serve(_registry_handler(state)) as url:
        yield url, state


class HubState:
    """One repo served the way huggingface.co serves it: repo info, tree listing, resolve URLs."""

    def __init__(self, repo_id: str, files: dict[str, bytes], commit: str = "c" * 40, lfs: tuple[str, ...] = ()):
        self.repo_id, self.files, self.commit, self.lfs = repo_id, files, commit, set(lfs)
        self.requests: list[str] = []
        self.tamper: dict[str, bytes] = {}  # served instead of the listed bytes (a corrupt transfer)

    def entry(self, path: str) -> dict:
        import hashlib

        data = self.files[path]
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        entry = {"type": "file", "oid": blob_id, "size": len(data), "path": path}
        if path in self.lfs:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def etag(self, path: str) -> str:
        entry = self.entry(path)
        return entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]


def _hub_handler(state: HubState):
    import json
    from urllib.parse import unquote, urlparse

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _serve(self, head: bool):
            path = unquote(urlparse(self.path).path)
            state.requests.append(f"{self.command} {self.path}")
            repo = state.repo_id
            if path in (f"/api/models/{repo}/revision/main", f"/api/models/{repo}/revision/{state.commit}"):
                return self._json({"id": repo, "modelId": repo, "sha": state.commit, "private": False,
                                   "siblings": [{"rfilename": p} for p in state.files]}, head)
            if path.startswith(f"/api/models/{repo}/tree/{state.commit}"):
                return self._json([state.entry(p) for p in state.files], head)
            for revision in ("main", state.commit):
                prefix = f"/{repo}/resolve/{revision}/"
                if path.startswith(prefix) and path[len(prefix):] in state.files:
                    return self._file(path[len(prefix):], head)
            code = "RepoNotFound" if not path.startswith((f"/api/models/{repo}/", f"/{repo}/")) else "EntryNotFound"
            self._send(404, b'{"error": "not found"}', {"X-Error-Code": code}, head)

        def _json(self, value, head: bool):
            self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"}, head)

        def _file(self, name: str, head: bool):
            data = state.tamper.get(name, state.files[name])
            headers = {"X-Repo-Commit": state.commit, "ETag": f'"{state.etag(name)}"'}
            if name in state.lfs:
                headers.update({"X-Linked-Etag": f'"{state.etag(name)}"', "X-Linked-Size": str(len(data))})
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and not head:
                start = int(match[1])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, data[start:], headers, head)
            self._send(200, data, headers, head)

        def _send(self, code: int, body: bytes, headers: dict, head: bool):
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


@contextmanager
def hugging_face_hub(state: HubState) -> Iterator[str]:
    with serve(_hub_handler(state)) as url:
        yield url
