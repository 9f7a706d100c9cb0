"""What a first start shows instead of an empty slab: what this is, where it
sends, how to change that, and the keys that matter."""

from __future__ import annotations

from textual.content import Content

from ...config import Settings
from ...sanitize import sanitize


def welcome_text(settings: Settings) -> Content:
    return Content.assemble(
        ("Welcome to chat-tui", "bold $accent"),
        "\n\nA chat window for any OpenAI-compatible endpoint. Every message is saved "
        "before it is sent; on a bad network it waits and goes out, in order, when the "
        "endpoint answers again.\n\n",
        ("Endpoint  ", "bold"),
        sanitize(settings.base_url),
        ("\nModel     ", "bold"),
        sanitize(settings.model),
        "\nChange them with F3 (Settings), or --base-url / --model.\n\n",
        ("Enter", "bold"),
        " sends · ",
        ("Ctrl+J", "bold"),
        " new line · ",
        ("F1", "bold"),
        " every key",
    )
