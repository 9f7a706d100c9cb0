"""The scriptable CLI, run as real `python -m chat_tui` processes.

The processes get a private data dir and config file (CHAT_TUI_DATA_DIR,
CHAT_TUI_CONFIG) and talk to the in-process loopback fault server
(OPENAI_BASE_URL). Output is checked for its documented shape.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

import chat_tui
from tests.fault_server import Fault, FaultServer
from tests.helpers import CliEnv, wait_settled

pytestmark = pytest.mark.timeout(60)

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
SECRET = "sk-test-SECRET-123"


def send(cli: CliEnv, *args: str) -> dict:
    return cli.json("send", "--json", *args)


def show(cli: CliEnv, cid: int) -> dict:
    return cli.json("show", str(cid), "--json")


def assert_clean_failure(proc, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


# -- send -----------------------------------------------------------------------------------------


def test_send_json_shape_and_targets(cli_env: CliEnv) -> None:
    first = send(cli_env, "hello there")
    assert {"conversation_id", "message_id", "state"} <= set(first)
    assert isinstance(first["conversation_id"], int) and isinstance(first["message_id"], int)
    assert first["state"] == "queued"

    # Default: the most recent conversation.
    second = send(cli_env, "second message")
    assert second["conversation_id"] == first["conversation_id"]
    # --new starts a conversation; -c picks one explicitly.
    other = send(cli_env, "--new", "another topic")
    assert other["conversation_id"] != first["conversation_id"]
    third = send(cli_env, "-c", str(first["conversation_id"]), "third message")
    assert third["conversation_id"] == first["conversation_id"]
    ids = {first["message_id"], second["message_id"], other["message_id"], third["message_id"]}
    assert len(ids) == 4

    conv = show(cli_env, first["conversation_id"])
    assert [m["content"] for m in conv["messages"]] == [
        "hello there",
        "second message",
        "third message",
    ]
    assert all(m["state"] == "queued" for m in conv["messages"])

    # A message is on disk when `send` returns.
    with sqlite3.connect(cli_env.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 4


def test_send_reads_stdin_and_refuses_empty(cli_env: CliEnv) -> None:
    proc = cli_env.run("send", "--json", "-", input="from stdin\nline two\n")
    assert proc.returncode == 0, proc.stderr
    cid = json.loads(proc.stdout)["conversation_id"]
    assert show(cli_env, cid)["messages"][0]["content"] == "from stdin\nline two\n"
    assert_clean_failure(cli_env.run("send", "   "), 2)


def test_send_to_missing_conversation_is_a_clear_error(cli_env: CliEnv) -> None:
    proc = cli_env.run("send", "-c", "4242", "nowhere")
    assert_clean_failure(proc, 1)
    assert "4242" in proc.stderr


def test_send_duplicate_is_reported(cli_env: CliEnv) -> None:
    first = send(cli_env, "same words")
    again = send(cli_env, "same words")
    assert again["message_id"] == first["message_id"]
    assert again.get("duplicate") is True
    assert len(show(cli_env, first["conversation_id"])["messages"]) == 1


# -- sync, show, list -----------------------------------------------------------------------


def test_sync_once_delivers_and_show_json_shape(cli_env: CliEnv, fault_server: FaultServer) -> None:
    a = send(cli_env, "first question")
    send(cli_env, "follow-up")
    b = send(cli_env, "--new", "other conversation")
    proc = cli_env.run("sync", "--once")
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"delivered (\d+); (\d+) still queued", proc.stdout)
    assert found, proc.stdout
    delivered, left = int(found[1]), int(found[2])
    assert delivered >= 2 and delivered + left == 3

    conv = show(cli_env, a["conversation_id"])
    # The promised keys; issue 13 adds endpoint, versions and the branch link beside them.
    assert {"id", "title", "messages"} <= set(conv)
    assert {"endpoint", "branch_of", "branch_seq"} <= set(conv)
    assert conv["id"] == a["conversation_id"] and conv["title"] == "first question"
    for m in conv["messages"]:
        extra = {"seq", "version", "versions"} if m["role"] == "user" else {"seq"}
        assert set(m) - extra == {
            "id",
            "role",
            "content",
            "state",
            "created_at",
            "error",
            "reasoning",
            "usage",
            "in_context",
        }
        assert isinstance(m["created_at"], float)
    # --once takes what is deliverable now: the follow-up may need a second pass.
    cli_env.run("sync", "--once", check=True)
    conv = show(cli_env, a["conversation_id"])
    assert [(m["role"], m["content"], m["state"]) for m in conv["messages"]] == [
        ("user", "first question", "delivered"),
        ("assistant", "echo: first question", "complete"),
        ("user", "follow-up", "delivered"),
        ("assistant", "echo: follow-up", "complete"),
    ]
    assert [m["content"] for m in show(cli_env, b["conversation_id"])["messages"]] == [
        "other conversation",
        "echo: other conversation",
    ]
    wait_settled(fault_server)
    keys = fault_server.completed_keys()
    assert len(keys) == 3 and set(keys.values()) == {1}


def test_show_human_output_has_no_escape_bytes(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.push(Fault("reply", text="\x1b[2J\x1b]0;owned\x07visible \x1b[31mreply\x1b[0m"))
    sent = send(cli_env, "title \x1b]0;evil\x07here\n\x1b[31mred\x1b[0m question\x9b2J")
    cli_env.run("sync", "--until-empty", "--timeout", "20", check=True)
    proc = cli_env.run("show", str(sent["conversation_id"]), check=True)
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "\x9b" not in proc.stdout
    assert not CONTROL.search(proc.stdout.replace("\n", "").replace("\t", ""))
    assert "visible reply" in proc.stdout
    assert "red question" in proc.stdout
    # list and status print the (user-typed) title: also clean.
    for verb in ("list", "status"):
        out = cli_env.run(verb, check=True).stdout
        assert "\x1b" not in out and "\x07" not in out, verb


def test_show_missing_conversation(cli_env: CliEnv) -> None:
    send(cli_env, "exists")
    proc = cli_env.run("show", "999")
    assert_clean_failure(proc, 1)
    assert "999" in proc.stderr


def test_list_json(cli_env: CliEnv) -> None:
    assert cli_env.json("list", "--json") == []
    a = send(cli_env, "alpha topic")
    b = send(cli_env, "--new", "beta topic")
    listed = cli_env.json("list", "--json")
    assert [c["id"] for c in listed] == [b["conversation_id"], a["conversation_id"]]
    assert [c["title"] for c in listed] == ["beta topic", "alpha topic"]
    for c in listed:
        assert {"id", "title", "created_at", "updated_at"} <= set(c)
    assert "alpha topic" in cli_env.run("list", check=True).stdout


# -- status and the API key -------------------------------------------------------------------


def test_status_json_never_contains_the_api_key(cli_env: CliEnv, fault_server: FaultServer) -> None:
    cli_env.env["OPENAI_API_KEY"] = SECRET
    fault_server.push(Fault("status", status=400))
    outputs: list[str] = []

    def run(*args: str) -> str:
        proc = cli_env.run(*args, check=True)
        outputs.extend([proc.stdout, proc.stderr])
        return proc.stdout

    failed = json.loads(run("send", "--json", "will fail"))
    ok = json.loads(run("send", "--json", "--new", "will work"))
    run("sync", "--until-empty", "--timeout", "20")
    status = json.loads(run("status", "--json"))
    run("status")
    run("show", str(ok["conversation_id"]))
    run("show", str(ok["conversation_id"]), "--json")
    run("list", "--json")
    run("paths")

    assert status["reachability"]["state"] == "online"
    assert status["counts"]["failed"] == 1 and status["counts"]["delivered"] == 1
    assert set(status["counts"]) >= {
        "queued",
        "sending",
        "delivered",
        "failed",
        "expired",
        "cancelled",
    }
    (item,) = status["items"]
    assert item["message_id"] == failed["message_id"] and item["state"] == "failed"
    assert "400" in item["last_error"]

    # The key was really used...
    auth = {r.headers.get("Authorization") for r in fault_server.requests}
    assert f"Bearer {SECRET}" in auth
    # ...and is nowhere in what we print or store.
    for text in outputs:
        assert SECRET not in text
    for f in cli_env.data_dir.iterdir():
        assert SECRET.encode() not in f.read_bytes(), f


def test_status_when_offline(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.stop()
    send(cli_env, "waiting")
    status = cli_env.json("status", "--json")
    assert status["reachability"]["state"] == "offline"
    assert status["counts"]["queued"] == 1 and len(status["items"]) == 1
    assert status["items"][0]["attempts"] == 0


# -- queue actions -------------------------------------------------------------------------------


def test_retry_and_cancel(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.push(Fault("status", status=422))
    sent = send(cli_env, "first")
    later = send(cli_env, "second")
    cli_env.run("sync", "--until-empty", "--timeout", "20", check=True)
    msgs = show(cli_env, sent["conversation_id"])["messages"]
    assert [m["state"] for m in msgs] == ["failed", "queued"]
    assert "422" in msgs[0]["error"]

    proc = cli_env.run("retry", str(sent["message_id"]), check=True)
    assert "queued" in proc.stdout
    cli_env.run("sync", "--until-empty", "--timeout", "20", check=True)
    msgs = show(cli_env, sent["conversation_id"])["messages"]
    assert [(m["role"], m["state"]) for m in msgs] == [
        ("user", "delivered"),
        ("assistant", "complete"),
        ("user", "delivered"),
        ("assistant", "complete"),
    ]
    assert msgs[2]["id"] == later["message_id"]

    # Nothing to retry or cancel on a delivered message: a clear error.
    for verb in ("retry", "cancel"):
        proc = cli_env.run(verb, str(sent["message_id"]))
        assert_clean_failure(proc, 1)
        assert "delivered" in proc.stderr

    fault_server.stop()
    queued = send(cli_env, "never mind")
    proc = cli_env.run("cancel", str(queued["message_id"]), check=True)
    assert "cancelled" in proc.stdout
    state = {m["id"]: m["state"] for m in show(cli_env, sent["conversation_id"])["messages"]}
    assert state[queued["message_id"]] == "cancelled"
    assert cli_env.json("status", "--json")["counts"]["queued"] == 0
    assert_clean_failure(cli_env.run("cancel", "987654"), 1)


# -- sync exit codes ------------------------------------------------------------------------------


def test_sync_until_empty_times_out_offline(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.stop()
    send(cli_env, "nobody listens")
    proc = cli_env.run("sync", "--until-empty", "--timeout", "2", timeout=20)
    assert_clean_failure(proc, 3)
    assert "1 still queued" in proc.stderr


def test_sync_once_offline_exits_5(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.stop()
    send(cli_env, "nobody listens")
    proc = cli_env.run("sync", "--once", timeout=20)
    assert_clean_failure(proc, 5)
    assert "offline" in proc.stderr


def test_sync_until_empty_stops_behind_failed_message(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("status", status=400))
    a = send(cli_env, "rejected")
    send(cli_env, "stuck behind it")
    proc = cli_env.run("sync", "--until-empty", "--timeout", "20")
    assert proc.returncode == 0, proc.stderr
    states = [m["state"] for m in show(cli_env, a["conversation_id"])["messages"]]
    assert states == ["failed", "queued"]


# -- configuration and errors -------------------------------------------------------------------


@pytest.mark.parametrize("verb", [["status"], ["send", "x"], ["sync"], ["list"], ["paths"]])
def test_invalid_config_is_exit_2_with_position(cli_env: CliEnv, verb: list[str]) -> None:
    cli_env.write_config('model = "ok"\nbackoff_base = = 3\n')
    proc = cli_env.run(*verb)
    assert_clean_failure(proc, 2)
    assert "line" in proc.stderr and "column" in proc.stderr
    assert str(cli_env.config_path) in proc.stderr
    assert not cli_env.db_path.exists()  # nothing was touched


def test_config_with_wrong_type_is_exit_2(cli_env: CliEnv) -> None:
    cli_env.write_config('max_attempts = "six"\n')
    proc = cli_env.run("status")
    assert_clean_failure(proc, 2)
    assert "max_attempts" in proc.stderr


def test_corrupt_database_is_named_not_deleted(cli_env: CliEnv) -> None:
    cli_env.data_dir.mkdir(parents=True)
    garbage = os.urandom(4096)
    cli_env.db_path.write_bytes(garbage)
    for args in (["list"], ["send", "hello"], ["status", "--json"]):
        proc = cli_env.run(*args)
        assert_clean_failure(proc, 1)
        assert str(cli_env.db_path) in proc.stderr
    assert cli_env.db_path.read_bytes() == garbage


def test_database_from_a_newer_version_is_refused_promptly(cli_env: CliEnv) -> None:
    send(cli_env, "written by this version")
    with sqlite3.connect(cli_env.db_path) as conn:
        conn.execute("PRAGMA user_version = 999")
    for args in (["list"], ["status"]):
        proc = cli_env.run(*args, timeout=15)  # it used to hang on exit
        assert_clean_failure(proc, 1)
        assert "newer" in proc.stderr and str(cli_env.db_path) in proc.stderr


def test_paths(cli_env: CliEnv) -> None:
    out = cli_env.run("paths", check=True).stdout
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["config"].strip() == str(cli_env.config_path)
    assert lines["data"].strip() == str(cli_env.data_dir)
    assert lines["database"].strip() == str(cli_env.data_dir / "chat.db")
    assert Path(lines["log"].strip()).parent == cli_env.data_dir


def test_version(cli_env: CliEnv) -> None:
    proc = cli_env.run("--version", check=True)
    assert proc.stdout.strip() == f"chat-tui {chat_tui.__version__}"


def test_base_url_flag_overrides_environment(cli_env: CliEnv, fault_server: FaultServer) -> None:
    cli_env.env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"  # nothing there
    status = cli_env.json("status", "--json", "--base-url", fault_server.base_url)
    assert status["endpoint"] == fault_server.base_url
    assert status["reachability"]["state"] == "online"


VERBS = [  # each answers --help without touching the database
    "send",
    "sync",
    "status",
    "list",
    "show",
    "search",
    "export",
    "retry",
    "cancel",
    "paths",
]


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_every_verb_has_help(cli_env: CliEnv, verb: str | None) -> None:
    proc = cli_env.run(*([verb] if verb else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert not cli_env.db_path.exists()  # --help touches nothing
