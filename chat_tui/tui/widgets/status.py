"""The status line (endpoint, model, connection, queue) and the offline banner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.reactive import reactive, var
from textual.widgets import Static

from ...sanitize import sanitize
from ..formatting import until

if TYPE_CHECKING:
    from ...events import ReachabilityState

STATE_LABELS = {
    "unknown": ("◌ checking", "$text-muted"),
    "online": ("● online", "$success"),
    "offline": ("○ offline", "$error"),
    "captive": ("◐ login page", "$warning"),
    "auth_error": ("⚠ auth problem", "$error"),
}


class StatusLine(Static):
    """One line at the bottom: where we send, what model, whether it answers, what waits."""

    DEFAULT_CSS = """
    StatusLine { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    queued: reactive[int] = reactive(0)  # waiting to go out, not counting those being answered
    sending: reactive[int] = reactive(0)  # being answered right now: not a reason for alarm
    reach: reactive[ReachabilityState | None] = reactive(None)

    def __init__(
        self, endpoint: str, model: str, *, tls_off: bool = False, id: str | None = None
    ) -> None:
        super().__init__(markup=False, id=id)
        self.endpoint = endpoint
        self.model = model
        self.tls_off = tls_off  # verify_tls = false: marked for as long as the app runs
        self.elsewhere: list[str] = []  # other endpoints in use that are not online

    def set_elsewhere(self, names: list[str]) -> None:
        if names != self.elsewhere:
            self.elsewhere = names
            self.refresh_line()

    def set_model(self, model: str) -> None:
        self.model = model
        self.refresh_line()

    def watch_queued(self) -> None:
        self.refresh_line()

    def watch_sending(self) -> None:
        self.refresh_line()

    def watch_reach(self) -> None:
        self.refresh_line()

    def refresh_line(self) -> None:
        state = self.reach.state if self.reach else "unknown"
        label, style = STATE_LABELS[state]
        parts: list[str | tuple[str, str]] = [
            (label, style),
            "  ",
            sanitize(self.endpoint),
            " · ",
            sanitize(self.model),
        ]
        if self.sending:
            parts += ["  ", (f"↻ {self.sending} being answered", "$accent")]
        if self.queued:
            parts += ["  ", (f"◷ {self.queued} queued", "bold $warning")]
        if self.elsewhere:
            parts += ["  ", (f"○ {', '.join(map(sanitize, self.elsewhere))} offline", "$warning")]
        if self.tls_off:
            parts += ["  ", ("⚠ TLS unverified", "bold $error")]
        self.update(Content.assemble(*parts))


class OfflineBanner(Static):
    """Says why nothing is being sent, when the next check is, and how to retry now."""

    DEFAULT_CSS = """
    OfflineBanner {
        height: auto; max-height: 2; padding: 0 1; background: $error 30%; color: $text;
        display: none; text-wrap: nowrap; text-overflow: ellipsis;
    }
    OfflineBanner.-captive { background: $warning 30%; }
    OfflineBanner.-visible { display: block; }
    """

    # Bound to the chat screen's (data_bind); each change redraws the text.
    reach: var[ReachabilityState | None] = var(None)
    queued: var[int] = var(0)  # every message not yet delivered

    def __init__(self) -> None:
        super().__init__(markup=False)
        self.problem: str | None = None  # the sender's own trouble (database), if any

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def watch_reach(self) -> None:
        self._show()

    def watch_queued(self) -> None:
        self._show()

    def show_problem(self, text: str | None) -> None:
        """A line about the sender itself ("cannot write the database: …; retrying")."""
        self.problem = text
        self._show()

    def _show(self) -> None:
        reach = self.reach
        offline = reach is not None and reach.state in ("offline", "captive", "auth_error")
        self.set_class(offline or self.problem is not None, "-visible")
        self.set_class(reach is not None and reach.state == "captive", "-captive")
        self._tick()

    def _tick(self) -> None:
        reach = self.reach
        if not self.has_class("-visible"):
            return
        problem = f"⚠ {sanitize(self.problem)[:300]}" if self.problem else ""
        if reach is None or reach.state not in ("offline", "captive", "auth_error"):
            self.update(Content.assemble((problem, "bold")))
            return
        name = "the endpoint" if reach.endpoint == "default" else f"endpoint {reach.endpoint}"
        why = {
            "offline": f"Offline: {name} cannot be reached",
            "captive": "A network login page is in the way (captive portal)",
            "auth_error": f"{name[0].upper()}{name[1:]} refused the API key; delivery is paused",
        }[reach.state]
        check = (
            "checking now…"
            if reach.next_probe_at is None
            else (f"next check {until(reach.next_probe_at)}")
        )
        queue = f" · {self.queued} queued, kept safe" if self.queued else ""
        detail = f" ({sanitize(reach.detail)[:120]})" if reach.detail else ""
        self.update(
            Content.assemble(
                ("⚠ " + why, "bold"),
                detail,
                "\n",
                f"{check} · Ctrl+R retries now{queue}",
                *(("\n", (problem, "bold")) if problem else ()),
            )
        )
