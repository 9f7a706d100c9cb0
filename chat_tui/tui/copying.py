"""What a copy takes from a message: the whole text, or one of its code blocks.

Copies go out with Textual's ``App.copy_to_clipboard``, which writes OSC 52:
the terminal puts the text on the *local* clipboard, also through SSH, and
through tmux when ``set -g set-clipboard on`` is set.
"""

from __future__ import annotations


def code_blocks(text: str) -> list[str]:
    """The fenced (and indented) code blocks of Markdown ``text``, in order."""
    from markdown_it import MarkdownIt  # Rich's Markdown parser: already installed

    tokens = MarkdownIt("commonmark").parse(text)
    return [t.content for t in tokens if t.type in ("fence", "code_block")]
