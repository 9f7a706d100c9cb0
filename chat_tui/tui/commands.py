"""Every command of the chat window, in one table.

The keys (``ChatScreen.BINDINGS`` and the App's own), the footer, the command
palette and the help screen (F1) are all made from ``COMMANDS``, so they cannot
drift apart. A command names an action of the chat screen, or of the App when
``app`` is set (the core's life cycle: settings, retry, quit), and what it
needs before it can run: a command whose needs are not met is greyed out
(``check_action`` returns None) and its key does nothing, or says ``hint``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from textual.app import SystemCommand
from textual.binding import Binding

if TYPE_CHECKING:
    from .app import ChatApp

Need = Literal["core", "conversation"]
ENGINE: frozenset[Need] = frozenset({"core"})
CONVERSATION: frozenset[Need] = frozenset({"core", "conversation"})


@dataclass(frozen=True)
class Command:
    action: str  # an action's name; "" for a key that is only described (the composer's)
    key: str = ""  # Textual key names, comma-separated; "" for a palette-only command
    label: str = ""  # the binding's description: the footer's word
    tooltip: str = ""  # a longer description: the help screen, the footer's tooltip
    show: bool = False  # in the footer
    title: str = ""  # its name in the command palette ("" = not there)
    help: str = ""  # its description in the palette (the key is added)
    app: bool = False  # the App's action, not the chat screen's
    app_binding: bool = False  # bound on the App too (see ChatApp.BINDINGS)
    priority: bool = False
    needs: frozenset[Need] = frozenset()
    hint: str = ""  # said when it is asked for but cannot run yet ("" = nothing said)
    section: str = "Everywhere"  # the help screen's heading

    def binding(self, *, on_screen: bool = True) -> Binding:
        """The binding; on the chat screen an App action is named ``app.ACTION``."""
        action = f"app.{self.action}" if self.app and on_screen else self.action
        return Binding(
            self.key,
            action,
            self.label,
            show=self.show,
            priority=self.priority,
            tooltip=self.tooltip,
        )

    @property
    def palette_help(self) -> str:
        return f"{self.help} ({key_text(self.key)})" if self.key else self.help

    def can_run(self, *, core: bool, conversation: bool) -> bool:
        return (core or "core" not in self.needs) and (
            conversation or "conversation" not in self.needs
        )


COMMANDS: tuple[Command, ...] = (
    # The footer shows the bound commands in this order.
    Command(
        "quit",
        "ctrl+q",
        "Quit",
        show=True,
        app=True,
        app_binding=True,  # a priority key: it works over any dialog
        priority=True,
    ),
    Command(
        "new_conversation",
        "ctrl+n",
        "New",
        show=True,
        title="New conversation",
        help="Start a new conversation",
    ),
    Command(
        "queue",
        "ctrl+o",
        "Queue",
        "The queue: retry, edit, cancel",
        show=True,
        title="Queue",
        help="Messages not yet delivered: retry, edit, cancel",
        needs=ENGINE,
    ),
    Command(
        "search",
        "ctrl+f",
        "Search",
        "Search every conversation",
        show=True,
        title="Search history",
        help="Full-text search of every conversation",
        needs=ENGINE,
    ),
    Command(
        "settings",
        "f3",
        "Settings",
        "Endpoint, model, theme…",
        show=True,
        title="Settings",
        help="Endpoint, model, system prompt, theme",
        app=True,
    ),
    Command(
        "help",
        "f1",
        "Keys",
        "This list of keys",
        show=True,
        title="Keys",
        help="Every key",
        app=True,
    ),
    Command(
        "retry_now",
        "ctrl+r",
        "Retry now",
        "Check the endpoint and send queued messages now",
        title="Retry now",
        help="Check the endpoint and send queued messages now",
        app=True,
        needs=ENGINE,
    ),
    Command(
        "export",
        "f4",
        "Export",
        "Export the conversation (Markdown or JSON)",
        title="Export conversation",
        help="Write this conversation to a Markdown or JSON file",
        needs=CONVERSATION,
        hint="Nothing to export yet.",
    ),
    Command(
        "rename",
        "f2",
        "Rename",
        "Rename the conversation",
        title="Rename conversation",
        help="Give this conversation a new title",
        needs=CONVERSATION,
        hint="Nothing to rename yet: send a first message.",
    ),
    Command(
        "delete",
        "f8",
        "Delete",
        "Delete the conversation",
        title="Delete conversation",
        help="Delete this conversation, after asking",
        needs=CONVERSATION,
    ),
    Command(
        "toggle_sidebar",
        "ctrl+b",
        "Sidebar",
        "Show or hide the conversation list",
        title="Toggle sidebar",
        help="Show or hide the conversation list",
    ),
    Command(
        "command_palette",
        "ctrl+p",
        "Palette",
        "Every action, by name",
        app=True,
        app_binding=True,  # Textual adds a palette key of its own unless the App has one
    ),
    Command(
        "regenerate",
        "ctrl+g",
        "Regenerate",
        "Ask again for the last reply",
        title="Regenerate reply",
        help="Ask again for the last reply; the old one is kept",
        needs=CONVERSATION,
    ),
    Command(
        "edit_last",
        "f6",
        "Edit last",
        "Edit and resend the last message",
        title="Edit last message",
        help="Edit and resend the last message; the old turn is kept",
        needs=CONVERSATION,
    ),
    Command(
        "version_prev",
        "alt+left",
        "Prev version",
        title="Previous version",
        help="Show the last turn's earlier version",
        needs=CONVERSATION,
    ),
    Command(
        "version_next",
        "alt+right",
        "Next version",
        title="Next version",
        help="Show the last turn's later version",
        needs=CONVERSATION,
    ),
    Command(
        "keep_local",
        "ctrl+l",
        "Keep local answer",
        title="Keep local answer",
        help="The fallback's answer is good enough: cancel the queued question",
        needs=CONVERSATION,
    ),
    # Shown only while a reply streams (ChatScreen.check_action).
    Command("stop_reply", "escape", "Stop", show=True),
    # In the palette only.
    Command(
        "set_model",
        title="Set model",
        help="Choose the model for this conversation",
        needs=CONVERSATION,
        hint="Send a first message, then set this conversation's model.",
    ),
    Command(
        "set_system_prompt",
        title="Set system prompt",
        help="Choose the system prompt for this conversation",
        needs=CONVERSATION,
        hint="Send a first message, then set this conversation's system prompt.",
    ),
    Command(
        "copy_last_reply",
        title="Copy last reply",
        help="Put the newest reply on the clipboard (OSC 52: works over SSH and tmux)",
    ),
    Command(
        "branch",
        title="Edit an earlier message (branch)",
        help="A new conversation with the turns before it and the edited message",
        needs=CONVERSATION,
    ),
    Command(
        "set_endpoint",
        title="Set endpoint",
        help="Choose the endpoint this conversation uses",
        needs=ENGINE,
    ),
    # The composer's own keys (widgets/composer.py), for the help screen.
    Command("", "enter", tooltip="Send the message", section="Writing"),
    Command("", "ctrl+j", tooltip="New line", section="Writing"),
    Command("", "tab", tooltip="Go to the messages (select one to copy it)", section="Writing"),
    Command("", "pageup,pagedown", tooltip="Scroll the chat", section="Writing"),
    Command("", "ctrl+home,ctrl+end", tooltip="First / newest message", section="Writing"),
)

BY_ACTION: dict[str, Command] = {c.action: c for c in COMMANDS if c.action}


def screen_bindings() -> list[Binding]:
    """Every key, for the chat screen (the footer shows them in the table's order)."""
    return [c.binding() for c in COMMANDS if c.action and c.key]


def app_bindings() -> list[Binding]:
    """The keys the App binds itself."""
    return [c.binding(on_screen=False) for c in COMMANDS if c.app_binding]


def palette_commands(app: ChatApp) -> Iterator[SystemCommand]:
    """The palette's entries (``App.get_system_commands``), in the table's order."""
    for command in COMMANDS:
        if command.title:
            yield SystemCommand(command.title, command.palette_help, partial(_run, app, command))


async def _run(app: ChatApp, command: Command) -> None:
    """A command chosen in the palette: it runs as its key would, or says why it cannot."""
    target = app if command.app else app.chat_screen
    if command.hint and not target.check_action(command.action, ()):
        app.notify(command.hint, markup=False)
        return
    await target.run_action(command.action)


def hinted(key: str) -> Iterator[Command]:
    """The commands bound to ``key`` that say why when they cannot run."""
    return (c for c in COMMANDS if c.hint and key in c.key.split(","))


_KEY_NAMES = {"left": "←", "right": "→"}


def key_text(key: str) -> str:
    """``ctrl+n`` → ``Ctrl+N``, ``alt+left`` → ``Alt+←`` (the first key of several)."""

    def part(name: str) -> str:
        if name in _KEY_NAMES:
            return _KEY_NAMES[name]
        if len(name) == 1 or (name[0] == "f" and name[1:].isdigit()):
            return name.upper()
        return name.capitalize()

    return "+".join(part(name) for name in key.split(",")[0].split("+"))


def help_sections(extra: Iterable[tuple[str, list]] = ()) -> list[tuple[str, list[Binding]]]:
    """The help screen's sections: the table's, by heading in order, then ``extra``."""
    sections: dict[str, list[Binding]] = {}
    for c in COMMANDS:
        if c.key:
            sections.setdefault(c.section, []).append(c.binding())
    return [*sections.items(), *extra]
