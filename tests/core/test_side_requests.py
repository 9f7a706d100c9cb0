"""A side request (the server's context size) never holds up the chat request after it.

Found by the long-reply benchmark: a server that answered ``POST /api/show`` with
a slow stream kept the context lookup reading it for 25 s before the message
was even sent. The lookup is bounded as a whole, and gives up on what is not JSON
as soon as the headers say so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chat_tui.endpoint import Endpoint
from tests.helpers import make_settings


class _Trickle(BaseHTTPRequestHandler):
    """Every request: a body that trickles one byte every 0.2 s for a minute."""

    content_type = "application/json"

    def log_message(self, *args: object) -> None:
        pass

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", self.server.content_type)  # type: ignore[attr-defined]
        self.end_headers()
        try:
            for _ in range(300):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    do_GET = _trickle
    do_POST = _trickle


@pytest.fixture(params=["application/json", "text/event-stream"])
def trickle_url(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.content_type = request.param  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_trickling_side_answer_is_given_up_in_seconds(
    trickle_url: str, tmp_path: Path
) -> None:
    endpoint = Endpoint(make_settings(f"{trickle_url}/v1", tmp_path, connect_timeout=1.0))
    try:
        started = time.monotonic()
        result = await endpoint.fetch_json("POST", f"{trickle_url}/api/show", {"model": "m"})
        took = time.monotonic() - started
    finally:
        await endpoint.aclose()
    assert result is None
    assert took < 5.0, f"the side request held on for {took:.1f} s"
