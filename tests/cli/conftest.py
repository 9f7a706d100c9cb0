"""The real program as a process: the CLI verbs (``cli_env``, from tests/conftest.py,
runs `python -m chat_tui` with a private data dir and config file), the app in a real
pseudo-terminal (``Terminal`` in tests/helpers.py), signals, several processes at once,
hostile servers and environments, and the security properties. No fixtures of this
folder's own yet: add them here.
"""
