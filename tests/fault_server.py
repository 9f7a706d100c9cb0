"""A real, misbehaving OpenAI-compatible chat-completions server for tests.

Why this exists: ``chat_tui`` must never lose a message on a bad network, and
the only honest way to prove that is to point the real client at a real HTTP
server over a real TCP socket and make that server fail in the ways networks,
proxies and providers actually fail: error statuses with ``Retry-After``,
captive portals answering with HTML, connections that hang, get reset, or are
cut mid-stream, SSE streams that never finish or contain garbage, and so on.
Mocking the HTTP library would test our assumptions about the library instead
of the client's behaviour on the wire.

Stdlib only (``http.server`` + threads), so it runs anywhere the tests run and
can also be started as a separate process (``python -m tests.fault_server``)
that other processes script through ``/_control/*`` endpoints.

Usage in-process::

    with FaultServer() as srv:
        srv.push(Fault("status", status=503, headers={"Retry-After": "1"}))
        ...  # point the client at srv.base_url
        assert srv.completed_keys()["key-1"] == 1   # delivered exactly once

Each ``POST /v1/chat/completions`` pops one queued :class:`Fault` (FIFO); with
an empty queue it is answered normally (or, with ``fault_rate > 0``, gets a
random fault from :data:`RANDOM_KINDS`, for soak tests).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MODEL_ID = "test-model"

#: Every fault kind understood by :class:`Fault`.
FAULT_KINDS = frozenset(
    {
        "status",
        "html",
        "hang",
        "reset",
        "cut",
        "no_finish",
        "malformed",
        "slow",
        "huge",
        "endless",
        "reply",
        "bad_utf8",
        "think",
        "done_no_finish",
        "reasoning",
        "overflow",
        "error_body",
        "error_event",
        "error_data",
        "stall_first_byte",
    }
)

#: Names drawn by :func:`random_fault` (soak tests with ``fault_rate``).
RANDOM_KINDS = (
    "status500",
    "status503",
    "status429",
    "hang_short",
    "reset",
    "cut",
    "no_finish",
    "malformed",
    "html",
)

#: Server-wide modes: they affect every non-control request, including
#: ``GET /v1/models``, and do not consume queued faults.
MODES = ("ok", "captive", "auth")

HUGE_PIECE_SIZE = 64 * 1024
ENDLESS_DELAY = 0.01

# Raw bytes spliced into a JSON string by the ``bad_utf8`` fault: a lone
# continuation-less lead byte, invalid start bytes, a truncated 3-byte
# sequence, an encoded surrogate and a raw NUL.  None of this can be produced
# by ``json.dumps``, which is exactly why a client might never have seen it.
BAD_UTF8_BYTES = b"bad:\xff\xfe|\xc3\x28|\xe2\x82|\xed\xa0\x80|nul:\x00:end"
_BAD_PLACEHOLDER = "@@BAD_UTF8@@"

CAPTIVE_PAGE = """<!DOCTYPE html>
<html><head><title>Welcome to Airport Free WiFi</title>
<meta http-equiv="refresh" content="0; url=http://login.example/portal"></head>
<body><h1>Please sign in to continue</h1>
<form action="http://login.example/portal" method="post">
<input type="checkbox" name="tos"> I accept the terms of service
<button type="submit">Connect</button></form></body></html>
"""


@dataclass
class Fault:
    """One scripted misbehaviour, applied to exactly one chat request.

    Only the fields relevant to ``kind`` are used; see the docstring
    of the matching ``_Handler._fault_<kind>`` method for the exact wire behaviour.
    """

    kind: str
    status: int = 500  # for kind="status"
    body: str | None = None  # raw body for "status"/"html"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Retry-After
    after_chunks: int = 2  # for "cut", "malformed"
    seconds: float = 30.0  # for "hang", "slow" (delay per chunk)
    size: int = 0  # for "huge": bytes of content to stream
    text: str | None = None  # for "reply": exact reply content
    style: str = ""  # "reasoning": reasoning_content|reasoning|think; "overflow": llama|openai|…
    finish: str | None = None  # for "done_no_finish": the finish_reason sent (None or "")
    thinking: str = "Let me think about this."  # for "reasoning"
    delay: float = 0.0  # for "reasoning": seconds before each chunk

    def __post_init__(self) -> None:
        # Fail loudly on typos: a misspelt kind would otherwise silently turn
        # a fault test into a happy-path test that always passes.
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")


def random_fault(rng: random.Random) -> Fault:
    """Draw one fault from :data:`RANDOM_KINDS` using ``rng`` (reproducible)."""
    name = rng.choice(RANDOM_KINDS)
    if name == "status500":
        return Fault("status", status=500)
    if name == "status503":
        return Fault("status", status=503)
    if name == "status429":
        return Fault("status", status=429, headers={"Retry-After": "1"})
    if name == "hang_short":
        return Fault("hang", seconds=3.0)
    if name in ("cut", "malformed"):
        return Fault(name, after_chunks=rng.randint(0, 3))
    return Fault(name)


@dataclass
class RequestRecord:
    """What the server saw and did for one (non-control) request.

    ``outcome`` is ``"pending"`` while in flight, then one of:
    ``"completed"`` (a full, valid, successful reply was written: for streams
    the finish_reason chunk and ``[DONE]``), ``"fault:<kind>"`` (a fault or a
    non-ok mode was applied and the reply was not a valid success),
    ``"aborted"`` (a normal reply was interrupted: client went away or the
    server stopped), ``"models"``, ``"bad_request"`` or ``"not_found"``.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    idempotency_key: str | None
    outcome: str
    started: float
    finished: float | None
    fault: str | None = None  # fault kind / mode applied, even if completed
    status: int | None = None  # HTTP status sent, None if none was sent


def default_reply(body: dict) -> str:
    """Default ``reply_fn``: echo the last message so tests can match replies
    to the request that produced them."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content") or ""
    if isinstance(content, list):  # multimodal "parts" form
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return f"echo: {content}"


def prompt_tokens(body: dict) -> int:
    """The test server's own token count of a request: 4 bytes of UTF-8 a token,
    plus 4 a message for the chat template (close to what small models do)."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else ""
        total += len(str(content or "").encode()) // 4 + 4
    return total


def split_pieces(text: str, n: int = 4) -> list[str]:
    """Split ``text`` into about ``n`` pieces, so replies arrive as several
    SSE chunks like real ones (and cuts can land between them)."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _dumps(obj: Any) -> bytes:
    # ensure_ascii=False: real providers send raw UTF-8, so multi-byte
    # characters may straddle TCP reads; the client has to cope with that.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class FaultServer:
    """Loopback OpenAI-compatible server that misbehaves on command.

    Thread-safe: the test thread pushes faults and reads records while
    handler threads serve requests.  ``start()`` may be called again after
    ``stop()`` and rebinds the same port, which lets tests simulate a server
    that goes away and comes back.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | None = None,
        *,
        fault_rate: float = 0.0,
        seed: int | None = None,
        reply_delay: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.fault_rate = fault_rate
        self.rng = random.Random(seed)
        #: Seconds to sleep before each chunk of a *normal* reply (and before
        #: a non-stream body), so tests can kill/stop the server mid-reply.
        self.reply_delay = reply_delay
        self.reply_fn: Callable[[dict], str] = default_reply
        #: A context window like a real server's: a prompt whose token count
        #: (``prompt_tokens()``) exceeds it gets an overflow error in
        #: ``overflow_style``; ``GET /props`` reports it when ``report_context``.
        self.context_tokens: int | None = None
        self.overflow_style = "llama"
        self.report_context = False
        #: Refuse ``stream_options`` with a 400, as some older proxies do.
        self.reject_stream_options = False
        #: Report llama.cpp-style ``timings.predicted_per_second`` with the usage
        #: (a fixed speed, for screens that must not change from run to run).
        self.tokens_per_second: float | None = None
        self.requests: list[RequestRecord] = []
        self._mode = "ok"
        self._faults: collections.deque[Fault] = collections.deque()
        self._cond = threading.Condition()
        self._log_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FaultServer:
        """Bind (the same port again after a stop) and serve in a daemon
        thread."""
        if self._httpd is not None:
            raise RuntimeError("FaultServer already started")
        httpd = _HTTPServer((self.host, self.port), _Handler, self)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fault-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a dying server: refuse new connections and abort the
        in-flight ones (hanging/slow/endless handlers wake up and close).

        Returns within about a second even with hanging handlers.
        """
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stop_event.set()  # wakes every handler waiting in _pause()
        httpd.shutdown()  # serve_forever loop exits (<= poll_interval)
        httpd.server_close()  # listening socket closed -> ECONNREFUSED
        httpd.abort_connections()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        httpd.wait_idle(timeout=0.5)  # let records get their final outcome

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"ok"``, ``"captive"`` (200 HTML portal) or ``"auth"`` (401)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; expected one of {MODES}")
        self._mode = value

    def push(self, *faults: Fault) -> None:
        """Queue faults; each chat request pops one, in order."""
        with self._cond:
            self._faults.extend(faults)

    def queued_faults(self) -> int:
        """Faults not yet consumed (lets tests assert a script was used up)."""
        with self._cond:
            return len(self._faults)

    def reset(self) -> None:
        """Back to a well-behaved server (records are kept)."""
        with self._cond:
            self._faults.clear()
            self._mode = "ok"
            self.fault_rate = 0.0

    def _next_fault(self) -> Fault | None:
        with self._cond:
            if self._faults:
                return self._faults.popleft()
            if self.fault_rate > 0 and self.rng.random() < self.fault_rate:
                return random_fault(self.rng)
        return None

    # -- observation -------------------------------------------------------

    def completed_keys(self) -> collections.Counter:
        """Idempotency-Key -> number of requests that got a full successful
        reply.  The core "never lose, never duplicate" assertion is
        ``completed_keys()[key] == 1``."""
        with self._cond:
            return collections.Counter(
                r.idempotency_key
                for r in self.requests
                if r.outcome == "completed" and r.idempotency_key is not None
            )

    def wait_for_requests(self, n: int, timeout: float = 5) -> bool:
        """Wait until at least ``n`` requests have *arrived* (any outcome)."""
        return self.wait_for(lambda recs: len(recs) >= n, timeout)

    def wait_for(
        self, predicate: Callable[[list[RequestRecord]], bool], timeout: float = 5
    ) -> bool:
        """Wait until ``predicate(requests)`` is true; records are updated
        under the same condition, so e.g. waiting for an outcome works."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.requests), timeout)

    def records_json(self) -> list[dict]:
        with self._cond:
            return [asdict(r) for r in self.requests]

    def _begin(
        self, method: str, path: str, headers: dict, body: dict | None, key: str | None
    ) -> RequestRecord:
        rec = RequestRecord(method, path, headers, body, key, "pending", time.time(), None)
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()
        return rec

    def _finish(self, rec: RequestRecord, outcome: str, status: int | None) -> None:
        with self._cond:
            rec.outcome = outcome
            rec.status = status
            rec.finished = time.time()
            self._cond.notify_all()
        if self.log_path:
            self._log(rec)

    def _log(self, rec: RequestRecord) -> None:
        # One flushed line per request: other processes tail this file.
        messages = rec.body.get("messages") if isinstance(rec.body, dict) else None
        line = json.dumps(
            {
                "method": rec.method,
                "path": rec.path,
                "idempotency_key": rec.idempotency_key,
                "outcome": rec.outcome,
                "fault": rec.fault,
                "status": rec.status,
                "started": rec.started,
                "finished": rec.finished,
                "messages": messages,
            }
        )
        with self._log_lock, open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its connections so ``stop()`` can
    abort them, and that never does reverse DNS on bind."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True  # restart on the same port despite TIME_WAIT
    request_queue_size = 128  # many concurrent clients in soak tests

    def __init__(self, addr: tuple[str, int], handler: type, fs: FaultServer):
        self.fault_server = fs
        self.stop_event = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can block on
        # DNS for seconds on badly configured machines.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def forget(self, request: Any) -> None:
        # Called before any close so abort_connections() never touches a
        # socket that a handler thread is closing concurrently.
        with self._conns_lock:
            self._conns.discard(request)

    def shutdown_request(self, request: Any) -> None:
        self.forget(request)
        super().shutdown_request(request)

    def abort_connections(self) -> None:
        with self._conns_lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._conns_lock:
                if not self._conns:
                    return
            time.sleep(0.01)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing mid-stream and stop() aborting sockets are the
        # whole point of this server: never print tracebacks for those.
        # Anything else is a bug in the fixture and should be visible.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _ChunkedWriter:
    """Frames each write as one HTTP/1.1 chunk; ``finish`` writes the last one."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def write(self, data: bytes) -> int:
        if data:
            self.raw.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.raw.flush()
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def finish(self) -> None:
        self.raw.write(b"0\r\n\r\n")
        self.raw.flush()


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection; one ``_fault_<kind>`` method per fault kind.

    Every fault method returns True only if it delivered a complete, valid,
    successful reply (which is what ``completed_keys`` counts).
    """

    protocol_version = "HTTP/1.1"  # keep-alive for non-stream replies
    server_version = "FaultServer/1.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle
        # plus the client's delayed ACK costs ~40 ms per keep-alive request.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence per-request stderr noise

    # -- dispatch ----------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        self._sent_status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self._sent_status: int | None = None
        self._end_of_stream: _ChunkedWriter | None = None
        path = urlsplit(self.path).path
        try:
            raw = self._read_body()
        except ValueError:
            self._send_error_json(400, "bad Content-Length", "invalid_request_error")
            self.close_connection = True
            return
        if path.startswith("/_control/"):
            self._control(method, path, raw)
            return

        fs = self.server.fault_server
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        key = self.headers.get("Idempotency-Key")
        rec = fs._begin(
            method, path, dict(self.headers.items()), body if isinstance(body, dict) else None, key
        )
        outcome = "aborted"
        try:
            outcome = self._route(method, path, body, rec)
        except OSError:
            # Client went away or stop() aborted us mid-reply.
            self.close_connection = True
            outcome = f"fault:{rec.fault}" if rec.fault else "aborted"
        finally:
            fs._finish(rec, outcome, self._sent_status)
            # The last chunk goes out only after the request is recorded, so a
            # client that has read the whole reply always finds it in the log.
            end, self._end_of_stream = self._end_of_stream, None
            if end is not None:
                with contextlib.suppress(OSError):
                    end.finish()

    def _route(self, method: str, path: str, body: Any, rec: RequestRecord) -> str:
        fs = self.server.fault_server
        is_models = method == "GET" and path == "/v1/models"
        is_chat = method == "POST" and path == "/v1/chat/completions"
        if method == "GET" and path == "/props" and fs.report_context and fs.context_tokens:
            self._send_json(200, {"default_generation_settings": {"n_ctx": fs.context_tokens}})
            return "props"
        if not (is_models or is_chat):
            self._send_error_json(404, f"no route for {method} {path}", "invalid_request_error")
            return "not_found"
        mode = fs.mode
        if mode != "ok":
            rec.fault = mode
            self._apply_mode(mode)
            return f"fault:{mode}"
        if is_models:
            self._send_json(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})
            return "models"
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_error_json(
                400, "body must be JSON with a 'messages' list", "invalid_request_error"
            )
            return "bad_request"

        self._stream = bool(body.get("stream"))
        self._model = str(body.get("model") or MODEL_ID)
        self._chat_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())
        self._role_sent = False
        self._usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        if fs.reject_stream_options and "stream_options" in body:
            self._send_error_json(
                400,
                "Unrecognized request argument supplied: stream_options",
                "invalid_request_error",
            )
            return "bad_request"
        used = self._prompt_tokens = prompt_tokens(body)
        if fs.context_tokens is not None and used > fs.context_tokens:
            self._send_overflow(fs.overflow_style, used, fs.context_tokens)
            return "overflow"
        fault = fs._next_fault()
        if fault is None:
            pieces = split_pieces(fs.reply_fn(body))
            ok = self._send_reply(body, pieces, fs.reply_delay)
            return "completed" if ok else "aborted"
        rec.fault = fault.kind
        ok = getattr(self, f"_fault_{fault.kind}")(fault, body)
        return "completed" if ok else f"fault:{fault.kind}"

    def _apply_mode(self, mode: str) -> None:
        if mode == "captive":
            self._send_bytes(200, CAPTIVE_PAGE.encode(), "text/html; charset=utf-8")
        else:
            self._send_error_json(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )

    # -- control endpoints (never faulted, never recorded) ------------------

    def _control(self, method: str, path: str, raw: bytes) -> None:
        fs = self.server.fault_server
        try:
            data = json.loads(raw) if raw else None
            route = (method, path)
            if route == ("POST", "/_control/push"):
                items = data if isinstance(data, list) else [data]
                fs.push(*(Fault(**item) for item in items))
                result: Any = {"queued": fs.queued_faults()}
            elif route == ("POST", "/_control/mode"):
                fs.mode = data["mode"]
                result = {"mode": fs.mode}
            elif route == ("POST", "/_control/config"):
                result = self._control_config(data or {})
            elif route == ("POST", "/_control/reset"):
                fs.reset()
                result = {"ok": True}
            elif route == ("GET", "/_control/keys"):
                result = dict(fs.completed_keys())
            elif route == ("GET", "/_control/requests"):
                result = fs.records_json()
            else:
                self._send_json(404, {"error": {"message": f"no control {path}"}})
                return
        except (ValueError, TypeError, KeyError) as exc:
            self._send_json(400, {"error": {"message": repr(exc)}})
            return
        self._send_json(200, result)

    def _control_config(self, data: dict) -> dict:
        fs = self.server.fault_server
        if "mode" in data:
            fs.mode = data["mode"]
        if "fault_rate" in data:
            fs.fault_rate = float(data["fault_rate"])
        if "reply_delay" in data:
            fs.reply_delay = float(data["reply_delay"])
        if "seed" in data:
            fs.rng.seed(data["seed"])
        for key in ("context_tokens", "overflow_style", "report_context", "reject_stream_options"):
            if key in data:
                setattr(fs, key, data[key])
        return {"mode": fs.mode, "fault_rate": fs.fault_rate, "reply_delay": fs.reply_delay}

    # -- low-level I/O helpers ---------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _pause(self, seconds: float) -> bool:
        """Sleep, but wake at once when the server stops; False if stopping."""
        stop = self.server.stop_event
        if seconds > 0:
            return not stop.wait(seconds)
        return not stop.is_set()

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        extra = dict(headers or {})
        lower = {k.lower() for k in extra}
        self.send_response(status)
        if "content-type" not in lower:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, _dumps(obj), "application/json", headers)

    def _send_error_json(
        self,
        status: int,
        message: str,
        type_: str,
        code: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        err = {"message": message, "type": type_, "param": None, "code": code}
        self._send_json(status, {"error": err}, headers)

    def _completion(self, text: str, finish_reason: str | None = "stop") -> dict:
        return {
            "id": self._chat_id,
            "object": "chat.completion",
            "created": self._created,
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": self._usage(text),
        }

    def _usage(self, text: str) -> dict:
        prompt = getattr(self, "_prompt_tokens", 1)
        completion = max(1, len(text) // 4)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    # SSE: close-delimited (Connection: close, no Content-Length), so a cut
    # stream looks like a clean EOF to the HTTP layer -- only the missing
    # finish_reason / [DONE] reveals it, which is what the client must check.

    def _sse_open(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse_chunk_bytes(self, delta: dict, finish_reason: str | None = None) -> bytes:
        chunk = {
            "id": self._chat_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return b"data: " + _dumps(chunk) + b"\n\n"

    def _content_delta(self, text: str) -> dict:
        if self._role_sent:
            return {"content": text}
        self._role_sent = True
        return {"role": "assistant", "content": text}

    def _sse_content(self, text: str) -> None:
        self.wfile.write(self._sse_chunk_bytes(self._content_delta(text)))

    def _sse_finish(self) -> None:
        self.wfile.write(self._sse_chunk_bytes({}, "stop"))

    def _sse_usage(self, text: str) -> None:
        """When asked (``stream_options.include_usage``), usage comes in a chunk of its
        own with empty ``choices``, after the finish, as OpenAI sends it."""
        if self._usage_wanted:
            chunk = {
                "id": self._chat_id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": self._usage(text),
            }
            speed = self.server.fault_server.tokens_per_second
            if speed is not None:
                chunk["timings"] = {"predicted_per_second": speed}
            self.wfile.write(b"data: " + _dumps(chunk) + b"\n\n")

    def _send_overflow(self, style: str, used: int, n_ctx: int) -> None:
        """A context-overflow error as each kind of server words it."""
        if style == "llama":
            err = {
                "code": 400,
                "message": f"request ({used} tokens) exceeds the available context size "
                f"({n_ctx} tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": used,
                "n_ctx": n_ctx,
            }
            self._send_json(400, {"error": err})
        elif style == "openai":
            self._send_error_json(
                400,
                f"This model's maximum context length is {n_ctx} tokens. However, your "
                f"messages resulted in {used} tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        elif style == "vllm":
            self._send_json(
                400,
                {
                    "object": "error",
                    "message": f"This model's maximum context length is {n_ctx} tokens. "
                    f"However, you requested {used} tokens in the messages, Please reduce "
                    "the length of the messages.",
                    "type": "BadRequestError",
                    "code": 400,
                },
            )
        elif style == "lmstudio":
            self._send_json(
                400,
                {
                    "error": f"Trying to keep the first {used} tokens when context the overflows. "
                    f"However, the model is loaded with context length of only {n_ctx} tokens, "
                    "which is not enough. Try to load the model with a larger context length, "
                    "or provide a shorter input"
                },
            )
        else:  # a server that says so without numbers
            self._send_error_json(
                400,
                "the request exceeds the available context size, try increasing it",
                "invalid_request_error",
            )

    def _sse_done(self) -> None:
        self.wfile.write(b"data: [DONE]\n\n")

    def _send_reply(
        self, body: dict, pieces: list[str], delay: float = 0.0, first_delay: float = 0.0
    ) -> bool:
        """A correct reply (stream or not), optionally slowed down (``first_delay``:
        silence after the headers, before the first chunk)."""
        if not self._stream:
            if not self._pause(delay + first_delay):
                self.close_connection = True
                return False
            self._send_json(200, self._completion("".join(pieces)))
            return True
        # A correct stream is sent as real servers send it: chunked, on a
        # connection that stays open for the next request. (Faults close theirs.)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        raw, self.wfile = self.wfile, _ChunkedWriter(self.wfile)
        try:
            self.wfile.flush()
            if not self._pause(first_delay):
                self.close_connection = True
                return False
            for piece in pieces:
                if not self._pause(delay):
                    self.close_connection = True
                    return False
                self._sse_content(piece)
            if not self._pause(delay):
                self.close_connection = True
                return False
            self._sse_finish()
            self._sse_usage("".join(pieces))
            self._sse_done()
            self._end_of_stream = self.wfile  # finished in _dispatch, after the record
        finally:
            self.wfile = raw
        return True

    def _reply_pieces(self, body: dict) -> list[str]:
        return split_pieces(self.server.fault_server.reply_fn(body))

    # -- one method per fault kind -----------------------------------------

    def _fault_status(self, fault: Fault, body: dict) -> bool:
        """HTTP error status (429/5xx/...) with an OpenAI-style JSON error body
        (or ``fault.body`` verbatim) plus ``fault.headers`` (Retry-After)."""
        if fault.body is not None:
            self._send_bytes(
                fault.status, fault.body.encode(), "text/plain; charset=utf-8", fault.headers
            )
            return False
        type_ = {
            429: "rate_limit_exceeded",
            401: "invalid_request_error",
            400: "invalid_request_error",
        }.get(fault.status, "server_error")
        self._send_error_json(
            fault.status, f"Injected fault: HTTP {fault.status}", type_, fault.status, fault.headers
        )
        return False

    def _fault_html(self, fault: Fault, body: dict) -> bool:
        """200 text/html captive portal, even for ``stream: true`` requests:
        a client that only checks the status code would accept garbage."""
        page = fault.body if fault.body is not None else CAPTIVE_PAGE
        self._send_bytes(200, page.encode(), "text/html; charset=utf-8", fault.headers)
        return False

    def _fault_hang(self, fault: Fault, body: dict) -> bool:
        """Read the request, answer nothing for ``seconds``, then close:
        the client's read timeout must fire."""
        self._pause(fault.seconds)
        self.close_connection = True
        return False

    def _fault_reset(self, fault: Fault, body: dict) -> bool:
        """Read the request, then close with RST (SO_LINGER on, timeout 0)."""
        conn = self.connection
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.forget(conn)
        self.close_connection = True
        self.rfile.close()  # drop makefile()'s reference so close() is real
        conn.close()
        return False

    def _fault_cut(self, fault: Fault, body: dict) -> bool:
        """Stream ``after_chunks`` content chunks, then close (no
        finish_reason, no [DONE]).  Non-stream: send half of a body whose
        Content-Length promises all of it."""
        pieces = self._reply_pieces(body)
        self.close_connection = True
        if not self._stream:
            data = _dumps(self._completion("".join(pieces)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            return False
        self._sse_open()
        for piece in pieces[: max(0, fault.after_chunks)]:
            self._sse_content(piece)
        return False

    def _fault_no_finish(self, fault: Fault, body: dict) -> bool:
        """All content, then the connection closes with neither a finish_reason
        nor ``[DONE]``: a stream cut at a chunk boundary, indistinguishable from
        a whole reply except by its missing end.  Non-stream: ``finish_reason: null``."""
        pieces = self._reply_pieces(body)
        if not self._stream:
            self._send_json(200, self._completion("".join(pieces), None))
            return False
        self._sse_open()
        for piece in pieces:
            self._sse_content(piece)
        return False

    def _fault_done_no_finish(self, fault: Fault, body: dict) -> bool:
        """All content with ``finish_reason`` ``fault.finish`` (null, or "" as Ollama
        has sent), then ``[DONE]``: a whole reply, as real servers send it."""
        pieces = self._reply_pieces(body)
        if not self._stream:
            self._send_json(200, self._completion("".join(pieces), "stop"))
            return True
        self._sse_open()
        for piece in pieces:
            delta = self._content_delta(piece)
            if fault.finish is None:
                self.wfile.write(self._sse_chunk_bytes(delta, None))
            else:
                chunk = json.loads(self._sse_chunk_bytes(delta, None)[6:])
                chunk["choices"][0]["finish_reason"] = fault.finish
                self.wfile.write(b"data: " + _dumps(chunk) + b"\n\n")
        self._sse_usage("".join(pieces))
        self._sse_done()
        return True

    def _fault_reasoning(self, fault: Fault, body: dict) -> bool:
        """A thinking model: ``fault.thinking`` as ``delta.reasoning_content``
        (llama.cpp, DeepSeek), ``delta.reasoning`` (Ollama, OpenRouter) or inline
        ``<think>…</think>`` (``style``), then the reply (``fault.text``; "" for a
        reply with reasoning only)."""
        style = fault.style or "reasoning_content"
        answer = fault.text if fault.text is not None else self.server.fault_server.reply_fn(body)
        if not self._stream:
            completion = self._completion(answer)
            message = completion["choices"][0]["message"]
            if style == "think":
                message["content"] = f"<think>{fault.thinking}</think>\n{answer}"
            else:
                message[style] = fault.thinking
            self._send_json(200, completion)
            return True
        self._sse_open()
        if style == "think":
            pieces = split_pieces(f"<think>{fault.thinking}</think>\n{answer}", 8)
            for piece in pieces:
                self._sse_content(piece)
        else:
            for piece in split_pieces(fault.thinking):
                if not self._pause(fault.delay):
                    return False
                self.wfile.write(self._sse_chunk_bytes({style: piece}))
                self.wfile.flush()
            for piece in split_pieces(answer) if answer else []:
                if not self._pause(fault.delay):
                    return False
                self._sse_content(piece)
        self._sse_finish()
        self._sse_done()
        return True

    def _fault_overflow(self, fault: Fault, body: dict) -> bool:
        """One context-overflow error in ``fault.style`` (llama, openai, vllm,
        lmstudio, bare), naming ``fault.size`` as the window."""
        self._send_overflow(fault.style or "llama", prompt_tokens(body), fault.size or 1024)
        return False

    def _fault_error_body(self, fault: Fault, body: dict) -> bool:
        """200 with a JSON error object instead of a completion (some proxies);
        ``fault.status`` goes in its ``code``."""
        self._send_error_json(200, "Injected error object", "server_error", fault.status)
        # _send_error_json sends the HTTP status given: 200 here, the code inside.
        return False

    def _fault_error_event(self, fault: Fault, body: dict) -> bool:
        """Some text, then an SSE ``event: error`` with an error object."""
        self._sse_open()
        self._sse_content("partial ")
        err = {"error": {"message": "Injected error event", "code": fault.status}}
        self.wfile.write(b"event: error\ndata: " + _dumps(err) + b"\n\n")
        return False

    def _fault_error_data(self, fault: Fault, body: dict) -> bool:
        """Some text, then a ``data:`` line holding an ``error`` object."""
        self._sse_open()
        self._sse_content("partial ")
        err = {"error": {"message": "Injected error data", "code": fault.status}}
        self.wfile.write(b"data: " + _dumps(err) + b"\n\n")
        return False

    def _fault_stall_first_byte(self, fault: Fault, body: dict) -> bool:
        """Headers of a stream, then nothing for ``seconds``: a server that
        accepted the request and never started the reply."""
        self._sse_open()
        self.wfile.flush()
        self._pause(fault.seconds)
        return False

    def _fault_malformed(self, fault: Fault, body: dict) -> bool:
        """After ``after_chunks`` chunks inject ``data: {not json`` and then
        finish normally: the client must reject the reply, not skip the bad
        event.  Non-stream: a ``{not json`` body labelled application/json."""
        if not self._stream:
            self._send_bytes(200, b"{not json", "application/json")
            return False
        pieces = self._reply_pieces(body)
        n = max(0, fault.after_chunks)
        self._sse_open()
        for piece in pieces[:n]:
            self._sse_content(piece)
        self.wfile.write(b"data: {not json\n\n")
        for piece in pieces[n:]:
            self._sse_content(piece)
        self._sse_finish()
        self._sse_done()
        return False

    def _fault_slow(self, fault: Fault, body: dict) -> bool:
        """A correct reply with ``seconds`` between chunks (counts as
        completed if the client waits for it)."""
        return self._send_reply(body, self._reply_pieces(body), fault.seconds)

    def _fault_think(self, fault: Fault, body: dict) -> bool:
        """A correct stream whose headers come at once and whose first token comes
        after ``seconds`` of silence (a model reading a long prompt); then the
        rest without delay. Non-stream: the body after ``seconds``."""
        return self._send_reply(body, self._reply_pieces(body), first_delay=fault.seconds)

    def _fault_huge(self, fault: Fault, body: dict) -> bool:
        """A correct reply of ``size`` bytes of "x" in 64 KiB chunks."""
        text = "x" * max(0, fault.size)
        pieces = [text[i : i + HUGE_PIECE_SIZE] for i in range(0, len(text), HUGE_PIECE_SIZE)] or [
            ""
        ]
        return self._send_reply(body, pieces)

    def _fault_endless(self, fault: Fault, body: dict) -> bool:
        """Content forever (every 10 ms) until the client disconnects or the
        server stops: the client needs a size/time limit of its own."""
        self.close_connection = True
        if self._stream:
            self._sse_open()
            while self._pause(ENDLESS_DELAY):
                self._sse_content("endless ")
            return False
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(
            b'{"id":"%s","object":"chat.completion","choices":'
            b'[{"index":0,"message":{"role":"assistant","content":"' % self._chat_id.encode()
        )
        while self._pause(ENDLESS_DELAY):
            self.wfile.write(b"x" * 1024)
        return False

    def _fault_reply(self, fault: Fault, body: dict) -> bool:
        """A correct reply with exactly ``text`` (ANSI escapes, markup, ...)."""
        text = fault.text if fault.text is not None else self.server.fault_server.reply_fn(body)
        return self._send_reply(body, split_pieces(text))

    def _fault_bad_utf8(self, fault: Fault, body: dict) -> bool:
        """A stream with raw invalid UTF-8 and a raw NUL inside a JSON string,
        then a normal finish.  Not counted as completed: the bytes are not
        valid JSON, so a strict client rejects it and a lenient one shows
        replacement characters -- either way the test decides, not us."""
        pieces = self._reply_pieces(body)
        if not self._stream:
            data = _dumps(self._completion(_BAD_PLACEHOLDER + "".join(pieces)))
            self._send_bytes(
                200, data.replace(_BAD_PLACEHOLDER.encode(), BAD_UTF8_BYTES), "application/json"
            )
            return False
        self._sse_open()
        self._sse_content(pieces[0])
        bad = self._sse_chunk_bytes(self._content_delta(_BAD_PLACEHOLDER))
        self.wfile.write(bad.replace(_BAD_PLACEHOLDER.encode(), BAD_UTF8_BYTES))
        for piece in pieces[1:]:
            self._sse_content(piece)
        self._sse_finish()
        self._sse_done()
        return False


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground until SIGTERM/SIGINT (for cross-process tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fault_server",
        description="Misbehaving OpenAI-compatible server; script it via "
        "POST /_control/push|mode|config|reset, GET /_control/keys|requests.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = pick a free port")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log", default=None, help="append JSON lines here")
    parser.add_argument(
        "--reply-delay", type=float, default=0.0, help="seconds before each chunk of a normal reply"
    )
    args = parser.parse_args(argv)

    server = FaultServer(
        args.host,
        args.port,
        args.log,
        fault_rate=args.fault_rate,
        seed=args.seed,
        reply_delay=args.reply_delay,
    )
    stopping = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(f"listening on {server.base_url}", flush=True)
    try:
        while not stopping.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
