"""Self-tests for the fault-injection server.

Why: every resilience test of chat_tui trusts that ``FaultServer`` really puts
each failure on the wire.  These checks use only ``http.client`` and raw
sockets (not the httpx stack the client uses), so a bug in the client's HTTP
library cannot hide a bug in the fixture, and vice versa.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.fault_server import (
    BAD_UTF8_BYTES,
    RANDOM_KINDS,
    Fault,
    FaultServer,
    random_fault,
)
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.timeout(15)


@pytest.fixture
def srv():
    with FaultServer() as server:
        yield server


def request(port, method, path, body=None, headers=None, timeout=5.0):
    """One request on a fresh connection -> (status, headers, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def chat(port, content="hi", stream=True, key=None, timeout=5.0):
    headers = {"Idempotency-Key": key} if key else {}
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
    }
    return request(port, "POST", "/v1/chat/completions", body, headers, timeout)


def sse_events(raw: bytes) -> list[bytes]:
    """The payloads of ``data:`` lines, undecoded."""
    return [block[len(b"data: ") :] for block in raw.split(b"\n\n") if block.startswith(b"data: ")]


def stream_summary(raw: bytes):
    """-> (content, finish_reasons, saw_done, parsed_chunks)."""
    content, finishes, done, chunks = "", [], False, []
    for payload in sse_events(raw):
        if payload == b"[DONE]":
            done = True
            continue
        chunk = json.loads(payload)
        chunks.append(chunk)
        choice = chunk["choices"][0]
        content += choice["delta"].get("content", "")
        if choice["finish_reason"] is not None:
            finishes.append(choice["finish_reason"])
    return content, finishes, done, chunks


def raw_chat_request(content="hi", stream=True) -> bytes:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": content}], "stream": stream}
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


# -- happy path ---------------------------------------------------------------


def test_models_and_normal_stream(srv):
    status, _, raw = request(srv.port, "GET", "/v1/models")
    assert status == 200
    assert json.loads(raw)["data"][0]["id"] == "test-model"

    status, headers, raw = chat(srv.port, "hello", key="k1")
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    content, finishes, done, chunks = stream_summary(raw)
    assert content == "echo: hello"
    assert finishes == ["stop"] and done
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert len(chunks) >= 3  # reply really is split into pieces
    assert srv.completed_keys() == {"k1": 1}
    assert [r.outcome for r in srv.requests] == ["models", "completed"]


def test_non_stream_and_keep_alive(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    for _ in range(3):  # same connection reused: keep-alive works
        conn.request("POST", "/v1/chat/completions", body=body)
        resp = conn.getresponse()
        assert resp.getheader("Content-Length")
        data = json.loads(resp.read())
        assert data["choices"][0]["message"]["content"] == "echo: x"
        assert data["choices"][0]["finish_reason"] == "stop"
    conn.close()
    srv.reply_fn = lambda body: "custom"
    assert json.loads(chat(srv.port, stream=False)[2])["choices"][0]["message"]["content"] == (
        "custom"
    )


# -- one test per fault kind ----------------------------------------------------


def test_status_fault(srv):
    srv.push(
        Fault("status", status=429, headers={"Retry-After": "2"}),
        Fault("status", status=502, body="<h1>Bad gateway</h1>"),
    )
    status, headers, raw = chat(srv.port, key="k")
    assert status == 429 and headers["Retry-After"] == "2"
    assert json.loads(raw)["error"]["code"] == 429
    status, _, raw = chat(srv.port)
    assert status == 502 and raw == b"<h1>Bad gateway</h1>"
    assert srv.requests[0].outcome == "fault:status" and srv.requests[0].status == 429
    assert srv.completed_keys() == {}


def test_html_fault(srv):
    srv.push(Fault("html"))
    status, headers, raw = chat(srv.port)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<html" in raw


def test_hang_fault_then_close(srv):
    srv.push(Fault("hang", seconds=0.3))
    t0 = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        chat(srv.port)
    assert 0.25 < time.monotonic() - t0 < 2


def test_hang_fault_client_timeout(srv):
    srv.push(Fault("hang", seconds=30))
    with pytest.raises(TimeoutError):
        chat(srv.port, timeout=0.3)


def test_reset_fault_sends_rst(srv):
    srv.push(Fault("reset"))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(raw_chat_request())
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = None
    assert data is None  # RST, not an orderly FIN
    assert srv.wait_for(lambda rs: rs[0].outcome == "fault:reset")


def test_cut_fault(srv):
    srv.push(Fault("cut", after_chunks=2))
    status, _, raw = chat(srv.port, "a longer message to split", key="c")
    _, finishes, done, chunks = stream_summary(raw)
    assert status == 200 and len(chunks) == 2
    assert not finishes and not done
    assert srv.completed_keys() == {}


def test_cut_fault_non_stream_short_body(srv):
    srv.push(Fault("cut"))
    with pytest.raises(http.client.IncompleteRead):
        chat(srv.port, stream=False)


def test_no_finish_fault(srv):
    srv.push(Fault("no_finish"))
    content, finishes, done, _ = stream_summary(chat(srv.port, "abc")[2])
    # Neither a finish_reason nor [DONE]: a cut stream ([DONE] alone is a whole reply).
    assert content == "echo: abc" and not done and not finishes


def test_malformed_fault(srv):
    srv.push(Fault("malformed", after_chunks=1))
    events = sse_events(chat(srv.port, key="m")[2])
    assert events[1] == b"{not json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[1])
    assert events[-1] == b"[DONE]"
    assert srv.completed_keys() == {}  # the client must not accept this reply


def test_slow_fault_completes(srv):
    srv.push(Fault("slow", seconds=0.1))
    t0 = time.monotonic()
    content, finishes, done, _ = stream_summary(chat(srv.port, "slow", key="s")[2])
    assert time.monotonic() - t0 >= 0.4
    assert content == "echo: slow" and finishes == ["stop"] and done
    assert srv.completed_keys() == {"s": 1}


def test_huge_fault(srv):
    srv.push(Fault("huge", size=300_000))
    content, finishes, done, chunks = stream_summary(chat(srv.port)[2])
    assert content == "x" * 300_000 and finishes == ["stop"] and done
    assert len(chunks) == 6  # 5 content chunks of <= 64 KiB + finish chunk


def test_endless_fault_until_client_leaves(srv):
    srv.push(Fault("endless"))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", body=raw_chat_request().split(b"\r\n\r\n")[1])
    resp = conn.getresponse()
    got = b""
    while got.count(b"data: ") < 10:
        got += resp.read1(4096)
    resp.close()  # the response holds its own reference to the socket
    conn.close()
    assert b"[DONE]" not in got
    assert srv.wait_for(lambda rs: rs[0].outcome == "fault:endless", timeout=3)


def test_reply_fault_exact_text(srv):
    text = "\x1b[31mred\x1b[0m [bold]markup[/bold] é 🙂"
    srv.push(Fault("reply", text=text))
    content, finishes, done, _ = stream_summary(chat(srv.port, key="r")[2])
    assert content == text and finishes == ["stop"] and done
    assert srv.completed_keys() == {"r": 1}


def test_bad_utf8_fault(srv):
    srv.push(Fault("bad_utf8"))
    raw = chat(srv.port)[2]
    assert BAD_UTF8_BYTES in raw and b"\x00" in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"finish_reason":"stop"' in raw


def test_push_is_fifo_then_normal(srv):
    srv.push(Fault("status", status=500), Fault("status", status=503))
    assert [chat(srv.port)[0] for _ in range(3)] == [500, 503, 200]
    assert srv.queued_faults() == 0


# -- modes, keys, logging, randomness --------------------------------------------


def test_modes_apply_to_every_request(srv):
    srv.mode = "captive"
    status, headers, _ = request(srv.port, "GET", "/v1/models")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    srv.push(Fault("status", status=500))
    srv.mode = "auth"
    assert chat(srv.port)[0] == 401
    assert srv.queued_faults() == 1  # modes do not consume queued faults
    with pytest.raises(ValueError):
        srv.mode = "bogus"


def test_completed_keys_counts_only_full_successes(srv):
    srv.push(Fault("cut"), Fault("no_finish"), Fault("status", status=503))
    for _ in range(4):
        chat(srv.port, key="a")
    chat(srv.port, key="a", stream=False)
    chat(srv.port, key="b")
    assert srv.completed_keys() == {"a": 2, "b": 1}


def test_log_file(tmp_path):
    log = tmp_path / "requests.jsonl"
    with FaultServer(log_path=str(log)) as server:
        server.push(Fault("status", status=500))
        chat(server.port, "one", key="k")
        chat(server.port, "two", key="k")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["fault:status", "completed"]
    assert lines[1]["messages"] == [{"role": "user", "content": "two"}]
    assert lines[1]["idempotency_key"] == "k" and lines[1]["finished"] >= lines[1]["started"]


def test_random_faults_reproducible():
    kinds = {"status", "hang", "reset", "cut", "no_finish", "malformed", "html"}
    a = [random_fault(random.Random(7)) for _ in range(1)]
    b = [random_fault(random.Random(7)) for _ in range(1)]
    assert a == b
    rng = random.Random(1)
    drawn = [random_fault(rng) for _ in range(200)]
    assert {f.kind for f in drawn} == kinds
    assert len(RANDOM_KINDS) == 9
    assert any(f.status == 429 and f.headers == {"Retry-After": "1"} for f in drawn)
    assert all(f.seconds == 3.0 for f in drawn if f.kind == "hang")


def test_fault_rate_applies_when_queue_empty():
    server = FaultServer(fault_rate=1.0, seed=3).start()
    for _ in range(6):
        with contextlib.suppress(OSError, http.client.HTTPException):
            chat(server.port, timeout=0.5)  # short: "hang_short" lasts 3 s
    server.stop()  # wakes any hanging handler so every record is final
    assert len(server.requests) == 6
    assert all(r.outcome.startswith("fault:") for r in server.requests)


def test_unknown_fault_kind_rejected():
    with pytest.raises(ValueError):
        Fault("nope")


# -- lifecycle ------------------------------------------------------------------


def test_stop_refuses_and_restart_reuses_port():
    server = FaultServer().start()
    port = server.port
    assert chat(port)[0] == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    server.start()
    try:
        assert server.port == port
        assert chat(port)[0] == 200
    finally:
        server.stop()


def test_stop_is_fast_and_aborts_inflight():
    server = FaultServer().start()
    server.push(Fault("hang", seconds=30), Fault("endless"), Fault("slow", seconds=30))
    errors = []

    def call():
        try:
            chat(server.port, timeout=10)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    # an idle keep-alive connection must not block stop() either
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    idle.request("GET", "/v1/models")
    idle.getresponse().read()
    assert server.wait_for_requests(4)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.5
    for t in threads:
        t.join(3)
        assert not t.is_alive()
    idle.close()
    assert {r.outcome for r in server.requests} == {
        "models",
        "fault:hang",
        "fault:endless",
        "fault:slow",
    }


def test_many_concurrent_clients(srv):
    results = []

    def call(i):
        content = stream_summary(chat(srv.port, f"m{i}", key=f"k{i}")[2])[0]
        results.append(content == f"echo: m{i}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == [True] * 40
    assert sum(srv.completed_keys().values()) == 40


# -- CLI + control endpoints (another process) ------------------------------------


def test_cli_subprocess_control_endpoints(tmp_path):
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_server", "--port", "0", "--log", str(log)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1].split("/")[0])

        faults = [{"kind": "status", "status": 503, "headers": {"Retry-After": "2"}}]
        assert request(port, "POST", "/_control/push", faults)[0] == 200
        status, headers, _ = chat(port, key="x")
        assert status == 503 and headers["Retry-After"] == "2"
        assert chat(port, key="x")[0] == 200
        assert json.loads(request(port, "GET", "/_control/keys")[2]) == {"x": 1}

        assert request(port, "POST", "/_control/mode", {"mode": "captive"})[0] == 200
        assert request(port, "GET", "/v1/models")[1]["Content-Type"].startswith("text/html")
        assert request(port, "POST", "/_control/mode", {"mode": "nope"})[0] == 400
        assert request(port, "POST", "/_control/push", [{"kind": "nope"}])[0] == 400

        records = json.loads(request(port, "GET", "/_control/requests")[2])
        assert [r["outcome"] for r in records] == ["fault:status", "completed", "fault:captive"]
        assert len(log.read_text().splitlines()) == 3  # control calls not logged
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
