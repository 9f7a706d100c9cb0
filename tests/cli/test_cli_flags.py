"""Issue 12, CLI side: shared flags before or after the verb, export overwrite,
a missing CHAT_TUI_CONFIG, phrase search and help texts. Real subprocesses
against the loopback fault server."""

from __future__ import annotations

import pytest

from chat_tui.cli import build_parser
from tests.fault_server import FaultServer
from tests.helpers import CliEnv

NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens on the discard port


@pytest.mark.parametrize("before", [True, False], ids=["before-verb", "after-verb"])
def test_base_url_and_model_flags_work_on_either_side_of_the_verb(
    cli_env: CliEnv, fault_server: FaultServer, before: bool
) -> None:
    cli_env.env["OPENAI_BASE_URL"] = NOWHERE
    cli_env.env["CHAT_TUI_MODEL"] = "configured-model"
    flags = ["--base-url", fault_server.base_url, "--model", "flag-model"]
    args = [*flags, "status", "--json"] if before else ["status", "--json", *flags]
    status = cli_env.json(*args)
    assert status["endpoint"] == fault_server.base_url
    assert status["model"] == "flag-model"
    assert status["reachability"]["state"] == "online"


def test_send_wait_goes_to_the_url_given_before_the_verb(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    cli_env.env["OPENAI_BASE_URL"] = NOWHERE
    proc = cli_env.run(
        "--base-url", fault_server.base_url, "--model", "m-before", "send", "--wait", "hi there"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "echo: hi there"
    chat = [r for r in fault_server.requests if r.path.endswith("/chat/completions")]
    assert chat and chat[0].body["model"] == "m-before"


def test_flag_after_the_verb_wins_over_one_before() -> None:
    args = build_parser().parse_args(["--model", "a", "status", "--model", "b"])
    assert args.model == "b"
    args = build_parser().parse_args(["--model", "a", "status"])
    assert args.model == "a"
    args = build_parser().parse_args(["status"])
    assert args.model is None and args.base_url is None


def test_export_refuses_to_overwrite_without_force(cli_env: CliEnv, tmp_path) -> None:
    sent = cli_env.json("send", "--json", "--new", "keep me")
    target = tmp_path / "out.md"
    target.write_text("precious\n")
    proc = cli_env.run("export", str(sent["conversation_id"]), "-o", str(target))
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--force" in proc.stderr
    assert target.read_text() == "precious\n"
    proc = cli_env.run("export", str(sent["conversation_id"]), "-o", str(target), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "keep me" in target.read_text()


def test_missing_config_file_is_reported_on_stderr(cli_env: CliEnv, tmp_path) -> None:
    missing = tmp_path / "typo" / "config.toml"
    cli_env.env["CHAT_TUI_CONFIG"] = str(missing)
    proc = cli_env.run("paths")
    assert proc.returncode == 0
    assert str(missing) in proc.stderr and "does not exist" in proc.stderr
    # An existing file says nothing.
    cli_env.env["CHAT_TUI_CONFIG"] = str(cli_env.config_path)
    assert "does not exist" not in cli_env.run("paths").stderr


def test_quoted_phrase_is_a_phrase_search(cli_env: CliEnv) -> None:
    cli_env.json("send", "--json", "--new", "the red apple fell")
    cli_env.json("send", "--json", "--new", "an apple that is red")
    hits = cli_env.json("search", "--json", '"red apple"')
    assert [h["snippet"].replace("«", "").replace("»", "") for h in hits] == ["the red apple fell"]
    both = cli_env.json("search", "--json", "red apple")
    assert len(both) == 2


@pytest.mark.parametrize(
    ("verb", "described"),
    [
        ("status", "print the state, counts and items as JSON"),
        ("search", "show at most N matches"),
        ("search", "a quoted phrase"),
        ("show", "conversation id"),
        ("export", "conversation id"),
        ("export", "overwrite FILE"),
        ("retry", "message id"),
    ],
)
def test_help_describes_every_argument(cli_env: CliEnv, verb: str, described: str) -> None:
    proc = cli_env.run(verb, "--help", check=True)
    assert described in " ".join(proc.stdout.split())


def test_wrong_base_url_path_says_so_with_the_url_tried(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    wrong = fault_server.base_url.removesuffix("/v1") + "/api"  # the server answers 404 there
    proc = cli_env.run("--base-url", wrong, "send", "--wait", "--timeout", "20", "hello")
    assert proc.returncode == 4, proc.stderr
    assert "wrong base URL" in proc.stderr
    assert f"{wrong}/chat/completions" in proc.stderr and f"{wrong}/models" in proc.stderr
    # The probe saw the 404 for /models too, and the status said online meanwhile.
    assert next(r.status for r in fault_server.requests if r.path.endswith("/models")) == 404


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--base-url", "http://h:1/v1"],
        ["--model=m1"],
        ["--base-url=", "--model", "m"],
        ["--model", "a", "--model", "b"],
        ["--model"],  # missing value: left to argparse
        ["--model", "--base-url", "x"],
        ["--mod", "m"],  # argparse's abbreviation: left to argparse
        ["--help"],
        ["status"],
        ["--model", "m", "status"],
        ["--verbose"],
    ],
)
def test_the_chat_windows_quick_reading_agrees_with_the_parser(argv: list[str]) -> None:
    """`chat-tui` with only the shared flags skips building the verbs' parsers; what it
    reads must be what the full parser reads, and anything else goes to the parser."""
    from chat_tui.cli.shared import window_args

    quick = window_args(argv)
    try:
        full = vars(build_parser().parse_args(argv))
    except SystemExit:  # --help, a missing value, an unknown flag
        assert quick is None
        return
    if full["verb"].name != "tui":
        assert quick is None
        return
    if quick is not None:
        assert vars(quick) == full
    else:
        assert argv == ["--mod", "m"]  # argparse's prefix matching, not copied
