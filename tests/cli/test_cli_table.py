"""The CLI's verb table: each verb declared once, what it needs opened by one runner
and closed however the verb ends. Real SQLite; no subprocess needed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from chat_tui.cli.parser import VERBS, build_parser
from chat_tui.cli.table import CliError, Verb, run_verb
from chat_tui.config import Settings


def settings_in(tmp_path: Path) -> Settings:
    return Settings(
        base_url="http://127.0.0.1:9/v1", data_dir=tmp_path, config_path=tmp_path / "none.toml"
    )


def test_a_verb_that_fails_still_has_its_store_closed(tmp_path: Path) -> None:
    seen = []

    async def failing(args: argparse.Namespace, settings: Settings, store) -> int:  # type: ignore[no-untyped-def]
        seen.append(store)
        await store.list_conversations()
        raise CliError("it went wrong", 4)

    verb = Verb("failing", "store", failing)
    with pytest.raises(CliError, match="it went wrong"):
        run_verb(verb, argparse.Namespace(), settings_in(tmp_path))
    assert len(seen) == 1 and seen[0].closed


def test_a_check_that_stops_the_verb_opens_nothing(tmp_path: Path) -> None:
    def never(*args: object) -> int:
        raise AssertionError("the verb ran although its check stopped it")

    verb = Verb("checked", "store", never, check=lambda args, settings: 0)
    assert run_verb(verb, argparse.Namespace(), settings_in(tmp_path)) == 0
    assert not (tmp_path / "chat.db").exists()


def test_every_verb_is_declared_once_and_takes_the_shared_flags() -> None:
    names = [verb.name for verb in VERBS]
    assert len(names) == len(set(names))
    (subparsers,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert sorted(subparsers.choices) == sorted(names)
    for name, parser in subparsers.choices.items():
        flags = parser._option_string_actions
        assert "--base-url" in flags and "--model" in flags, name
        assert parser.get_default("verb").name == name
