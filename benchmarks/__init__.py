"""Performance benchmarks for chat-tui.

Each module is runnable on its own (``python -m benchmarks.<name> [--quick]``)
and exposes ``run(quick: bool) -> list[Result]``; ``python -m benchmarks``
runs them all and prints one table. They use only the project's runtime
dependencies, loopback sockets and temporary directories.
"""
