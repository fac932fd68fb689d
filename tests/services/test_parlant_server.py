"""A real Parlant server on loopback answering a customer over its REST API, on the default SmolLM2 model.

The server runs in its own process (``parlant_server.py``); the test creates a session, posts a customer
message and waits (bounded) for the agent's reply event. Slow: every Parlant prompt of the turn (guideline
matching, message generation, ~1-3k tokens each) runs through the model on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("parlant.sdk", reason="parlant is an optional extra (pip install parlant)")
httpx = pytest.importorskip("httpx")

from inference_pio.defaults import DefaultModelMissingError, default_model_path  # noqa: E402
from tests.server.serving import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 600  # model load + guideline evaluation (three schematic calls) on a loaded 2-core machine
TURN_TIMEOUT = 600


def _default_model_or_skip() -> None:
    try:
        default_model_path()
    except DefaultModelMissingError as e:
        pytest.skip(str(e))


class ServerProcess:
    """``parlant_server.py`` as a process; its output lines are collected as they come."""

    def __init__(self, kind: str, home: Path, *extra: str):
        self.port, tool_port = free_port(), free_port()
        env = {**os.environ, "PARLANT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.services.parlant_server", str(self.port),
                                      str(tool_port), kind, *extra], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float) -> str:
        """The agent's id, once the server answers on its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            agent = [line.split()[1] for line in self.lines if line.startswith("AGENT ")]
            if agent:
                try:
                    httpx.get(f"http://127.0.0.1:{self.port}/agents", timeout=5).raise_for_status()
                    return agent[0]
                except httpx.HTTPError:
                    pass
            time.sleep(1)
        pytest.fail(f"the Parlant server did not start within {timeout} s:\n" + "\n".join(self.lines[-60:]))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def one_turn(base: str, agent_id: str, message: str, session_id: str | None = None) -> tuple[dict, float]:
    """Posts ``message`` as the customer (in a new session, or ``session_id``'s); the agent's reply event (its
    ``session_id`` added) and the turn's seconds."""
    with httpx.Client(base_url=base, timeout=httpx.Timeout(TURN_TIMEOUT + 30)) as client:
        if session_id is None:
            session_id = client.post("/sessions", json={"agent_id": agent_id}).raise_for_status().json()["id"]
        session = {"id": session_id}
        started = time.monotonic()
        posted = client.post(f"/sessions/{session['id']}/events",
                             json={"kind": "message", "source": "customer", "message": message}
                             ).raise_for_status().json()
        deadline = started + TURN_TIMEOUT
        while time.monotonic() < deadline:
            wait = max(1, min(15, int(deadline - time.monotonic())))
            response = client.get(f"/sessions/{session['id']}/events",
                                  params={"min_offset": posted["offset"] + 1, "source": "ai_agent",
                                          "kinds": "message", "wait_for_data": wait})
            if response.status_code == 504:  # parlant's "no new event within wait_for_data"
                continue
            events = response.raise_for_status().json()
            if events:
                return {**events[0], "session_id": session_id}, time.monotonic() - started
            status = client.get(f"/sessions/{session['id']}/events",
                                params={"min_offset": posted["offset"] + 1, "kinds": "status", "wait_for_data": 0})
            errors = [e for e in status.json() if e["data"].get("status") == "error"] if status.is_success else []
            if errors:
                pytest.fail(f"the agent's turn failed: {str(errors[0]['data'])[-1500:]}")
        pytest.fail(f"no agent reply within {TURN_TIMEOUT} s")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "switcher"])
def test_a_parlant_agent_answers_a_customer_through_the_rest_api(kind, tmp_path):
    _default_model_or_skip()
    server = ServerProcess(kind, tmp_path)
    try:
        agent_id = server.wait_ready(START_TIMEOUT)
        before = len(server.lines)
        event, seconds = one_turn(f"http://127.0.0.1:{server.port}", agent_id, "What is the capital of France?")
        turn_lines = server.lines[before:]
    finally:
        server.close()
    message = event["data"]["message"]
    assert isinstance(message, str) and message.strip(), event
    calls = [line for line in turn_lines if line.startswith("GENERATION ")]
    failures = [line for line in turn_lines if line.startswith("GENERATION FAILED")]
    print(f"\n{kind}: turn {seconds:.1f} s, {len(calls)} generation calls, {len(failures)} failed; reply {message!r}")
    print("\n".join(calls))
    assert not failures, failures


def measure_prefix_caching(home: Path) -> None:
    """Two turns of one conversation, with and without prefix caching (``python -m
    tests.services.test_parlant_server``): turn seconds and generation calls, printed."""
    for extra in ((), ("no-prefix-caching",)):
        server = ServerProcess("local", home / ("on" if not extra else "off"), *extra)
        try:
            agent_id = server.wait_ready(START_TIMEOUT)
            base, session_id = f"http://127.0.0.1:{server.port}", None
            for message in ("What is the capital of France?", "And the capital of Italy?"):
                before = len(server.lines)
                event, seconds = one_turn(base, agent_id, message, session_id)
                session_id = event["session_id"]
                calls = sum(line.startswith("GENERATION ") for line in server.lines[before:])
                failed = sum(line.startswith("GENERATION FAILED") for line in server.lines[before:])
                print(f"prefix caching {'off' if extra else 'on'}: {message!r}: {seconds:.1f} s, {calls} generation "
                      f"calls ({failed} failed); reply {event['data']['message']!r}", flush=True)
        finally:
            server.close()


if __name__ == "__main__":
    import tempfile

    measure_prefix_caching(Path(tempfile.mkdtemp(prefix="parlant_prefix_")))
