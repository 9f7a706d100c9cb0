"""Named endpoints in use: one client, one reachability watcher and one context keeper each.

A conversation belongs to one endpoint (``conversations.endpoint``, NULL for
the default one the flat settings describe). Delivery stays one path: the
sender claims from the one outbox, only for conversations whose endpoint is
online, and sends with that conversation's endpoint client. So a message for
an offline endpoint waits while other endpoints' conversations go on.

A link is made the first time something needs its endpoint (a conversation
with queued messages, the fallback, the conversation on screen), so an
endpoint nobody uses is never probed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from . import context
from .config import DEFAULT_ENDPOINT, Settings
from .endpoint import Endpoint
from .events import ReachabilityState
from .reachability import Reachability
from .store import Conversation, Store


class UnknownEndpoint(KeyError):
    """A conversation names an endpoint the configuration no longer has."""


@dataclass(eq=False)
class Link:
    name: str
    settings: Settings
    endpoint: Endpoint
    reachability: Reachability
    context: context.ContextKeeper
    usage_option_checked: bool = False
    usage_option_saved: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def model(self) -> str:
        return self.settings.model


def endpoint_name(conversation: Conversation | None) -> str:
    return (conversation.endpoint if conversation else None) or DEFAULT_ENDPOINT


class Links:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_reachability: Callable[[ReachabilityState], None] | None = None,
        default: tuple[Endpoint, Reachability] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._on_reachability = on_reachability
        self._links: dict[str, Link] = {}
        self._watching = False
        if default is not None:
            endpoint, reachability = default
            self._links[DEFAULT_ENDPOINT] = Link(
                DEFAULT_ENDPOINT,
                settings,
                endpoint,
                reachability,
                context.ContextKeeper(settings, store, endpoint),
            )
        else:
            self.get(DEFAULT_ENDPOINT)

    @property
    def default(self) -> Link:
        return self._links[DEFAULT_ENDPOINT]

    def configured(self, name: str | None) -> bool:
        return (name or DEFAULT_ENDPOINT) in self.settings.endpoint_names

    def get(self, name: str | None) -> Link:
        """The link for an endpoint, made (and watched, once watching started) on first use."""
        name = name or DEFAULT_ENDPOINT
        link = self._links.get(name)
        if link is not None:
            return link
        try:
            own = self.settings.for_endpoint(name)
        except KeyError:
            raise UnknownEndpoint(name) from None
        endpoint = Endpoint(own)
        reachability = Reachability(
            endpoint, probe_cap=own.probe_cap, on_change=self._on_reachability, name=name
        )
        link = Link(
            name, own, endpoint, reachability, context.ContextKeeper(own, self.store, endpoint)
        )
        self._links[name] = link
        if self._watching:
            self._watch(link)
        return link

    def for_conversation(self, conversation: Conversation | None) -> Link:
        return self.get(endpoint_name(conversation))

    def known(self, conversation: Conversation | None) -> Link | None:
        """The conversation's link, or None if the configuration no longer has its endpoint."""
        try:
            return self.for_conversation(conversation)
        except UnknownEndpoint:
            return None

    def all(self) -> list[Link]:
        return list(self._links.values())

    def online_names(self) -> list[str]:
        return [name for name, link in self._links.items() if link.reachability.online]

    @property
    def any_online(self) -> bool:
        return any(link.reachability.online for link in self._links.values())

    def probe_now(self, name: str | None = None) -> None:
        """Check one endpoint (a submit to it), or every one (the user's retry-now)."""
        links = self._links.values() if name is None else [self.get(name)]
        for link in links:
            link.reachability.probe_now()

    async def wait_change(self, timeout: float | None = None) -> None:
        """Return when any endpoint's state changes (or after ``timeout``)."""
        waiters = [
            asyncio.ensure_future(link.reachability.wait_change()) for link in self._links.values()
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def start_watching(self) -> None:
        self._watching = True
        for link in self._links.values():
            self._watch(link)

    def _watch(self, link: Link) -> None:
        if link.task is None:
            link.task = asyncio.create_task(
                link.reachability.run(), name=f"reachability-{link.name}"
            )

    async def aclose(self) -> None:
        for link in self._links.values():
            if link.task is not None:
                link.task.cancel()
        for link in self._links.values():
            if link.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await link.task
                link.task = None
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.endpoint.aclose()
