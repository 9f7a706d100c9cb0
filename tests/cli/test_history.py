"""History and scripts: search, export, `send --wait`, per-conversation settings, the log."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from chat_tui.store import Store
from tests.fault_server import Fault, FaultServer
from tests.helpers import CliEnv


def delivered(cli: CliEnv, *texts: str) -> int:
    """Queue texts in a new conversation, deliver them, return the conversation id."""
    first = cli.json("send", "--new", "--json", texts[0])
    for text in texts[1:]:
        cli.json("send", "-c", str(first["conversation_id"]), "--json", text)
    cli.run("sync", "--until-empty", "--timeout", "20", check=True)
    return first["conversation_id"]


def test_search_finds_words_and_prefixes_safely(cli_env: CliEnv) -> None:
    cid = delivered(cli_env, "where do penguins live", "what do koalas eat")
    hits = cli_env.json("search", "penguin", "--json")
    assert {(h["conversation_id"], h["role"]) for h in hits} == {(cid, "user"), (cid, "assistant")}
    assert all("penguin" in h["snippet"].lower() for h in hits)
    assert cli_env.json("search", "zebra", "--json") == []
    # FTS5 syntax in what a person types never becomes an error.
    for odd in ('koala" OR', "AND", "(", "*", 'NEAR("x"', "-koalas"):
        proc = cli_env.run("search", "--json", "--", odd)
        assert proc.returncode == 0, (odd, proc.stderr)
        json.loads(proc.stdout)
    human = cli_env.run("search", "koalas", check=True).stdout
    assert "koalas" in human and str(cid) in human


def test_export_round_trips_markdown_and_json(cli_env: CliEnv, tmp_path: Path) -> None:
    cid = delivered(cli_env, "first question", "second question")
    shown = cli_env.json("show", str(cid), "--json")
    out = tmp_path / "conv.json"
    cli_env.run("export", str(cid), "--format", "json", "-o", str(out), check=True)
    exported = json.loads(out.read_text())
    assert exported["id"] == cid and exported["title"] == shown["title"]
    assert exported["messages"] == shown["messages"]
    md = cli_env.run("export", str(cid), "--format", "md", check=True).stdout
    assert md.startswith(f"# {shown['title']}")
    for m in shown["messages"]:
        assert m["content"] in md
    assert (
        md.index("first question") < md.index("echo: first question") < md.index("second question")
    )
    bad = cli_env.run("export", "999", "--format", "md")
    assert bad.returncode == 1 and "no conversation" in bad.stderr
    unwritable = cli_env.run("export", str(cid), "-o", str(tmp_path / "missing" / "x.md"))
    assert unwritable.returncode == 1 and "cannot write" in unwritable.stderr
    assert "Traceback" not in bad.stderr + unwritable.stderr


def test_send_wait_prints_the_reply(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.reply_fn = lambda body: "the answer is 42"
    proc = cli_env.run("send", "--new", "--wait", "what is the answer", check=True)
    assert proc.stdout.strip() == "the answer is 42"
    data = cli_env.json("send", "--wait", "--json", "and again")
    assert data["state"] == "delivered" and data["reply"] == "the answer is 42"


def test_send_wait_exit_codes(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.push(Fault(kind="status", status=400, body='{"error": {"message": "nope"}}'))
    failed = cli_env.run("send", "--new", "--wait", "doomed")
    assert failed.returncode == 4 and "nope" in failed.stderr
    fault_server.push(Fault(kind="slow", seconds=2.0))
    slow = cli_env.run("send", "--new", "--wait", "--timeout", "1", "slowly")
    assert slow.returncode == 3 and "stays queued" in slow.stderr
    fault_server.stop()
    offline = cli_env.run("send", "--new", "--wait", "--timeout", "2", "nobody home")
    assert offline.returncode == 5 and "offline" in offline.stderr
    status = cli_env.json("status", "--json")
    assert status["reachability"]["state"] == "offline"
    assert status["counts"]["queued"] >= 1  # still queued, nothing lost


async def test_conversation_model_and_system_prompt_are_sent(
    settings, fault_server: FaultServer
) -> None:
    from chat_tui.core import Core

    core = await Core.open(settings)
    async with core:
        core.start_watching()
        first = await core.sender.submit(None, "hello")
        await core.store.configure_conversation(
            first.message.conversation_id, model="special-model", system_prompt="Be brief."
        )
        await core.sender.run(until_empty=True)
    body = [r for r in fault_server.requests if r.outcome == "completed"][-1].body
    assert body["model"] == "special-model"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][-1] == {"role": "user", "content": "hello"}


def test_log_has_events_but_no_message_text(cli_env: CliEnv, fault_server: FaultServer) -> None:
    fault_server.push(Fault(kind="status", status=500))
    delivered(cli_env, "a very private sentence about my health")
    log = cli_env.data_dir / "chat-tui.log"
    assert log.exists()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "private sentence" not in text and "echo:" not in text
    assert "delivered" in text  # the log does say what happened


async def test_title_comes_from_first_message(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "chat.db")
    try:
        message, _ = await store.enqueue(None, "\n\n  Plan the garden for spring  \nmore text")
        conversation = await store.get_conversation(message.conversation_id)
        assert conversation is not None and conversation.title == "Plan the garden for spring"
        long, _ = await store.enqueue(None, "x" * 200)
        titled = await store.get_conversation(long.conversation_id)
        assert titled is not None and len(titled.title) == 60 and titled.title.endswith("…")
    finally:
        await store.close()
