"""chat-tui: a terminal chat client that never loses a message on a bad network."""

__version__ = "0.1.0"
