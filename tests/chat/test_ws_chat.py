"""Character chat over the WebSocket, end to end with real parts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from brain.emotion import EMOTION_INSTRUCTIONS
from bus import Connection
from bus.chat import TurnStarted, UserText
from bus.tap import Tap, TapFilter
from bus.voice import SpeechStarted
from tests.chat.conftest import ChatSystem
from tests.fakes.openai_server import Behaviour
from tests.helpers import Collector


async def test_a_reply_streams_with_status_and_emotion_and_is_stored(chat: ChatSystem) -> None:
    chat.llm.script.append(Behaviour(delay=0.01))  # a model that generates as it goes
    ws = await chat.ws("ada")
    started = await ws.start()
    assert ws.greeting is not None and ws.greeting["text"].startswith("Hi! I'm Ada")
    await ws.say("Hello Ada!")
    first = await ws.expect("text")
    emotion = await ws.expect("emotion")
    assert await ws.expect(lambda f: f.get("status") == "speaking")
    reply = await ws.reply()
    statuses = [f["status"] for f in ws.frames if f["type"] == "status"]
    assert "thinking" in statuses and statuses.index("thinking") < statuses.index("speaking")
    assert not any(f["type"] == "interrupt" for f in ws.frames), "nothing was playing: no interrupt"
    deltas = [f["text"] for f in ws.frames if f["type"] == "text"]
    assert len(deltas) > 3, "the reply must stream in pieces"
    assert first["text"] == deltas[0]
    assert "".join(deltas) == reply["text"] == "Hello there! I am glad you came. What shall we talk about?"
    assert emotion["emotion"] == "happy" and reply["emotion"] == "happy"
    await ws.expect(lambda f: f.get("status") == "idle")
    # what the model saw: the card's persona and the user's words
    sent = chat.llm.requests[-1]["body"]
    assert "You are Ada" in sent["messages"][0]["content"] and sent["messages"][-1]["content"] == "Hello Ada!"
    assert EMOTION_INSTRUCTIONS.split("{")[0] in sent["messages"][0]["content"]  # a configured model is asked
    assert sent["stream"] is True and chat.llm.requests[-1]["auth"] == "Bearer test-key"
    # stored in order: greeting, user, assistant
    conn = await asyncpg.connect(chat.database_url)
    rows = await conn.fetch(
        "SELECT speaker, content FROM messages WHERE session_id = $1 ORDER BY timestamp", started["session_id"]
    )
    await conn.close()
    assert [r["speaker"] for r in rows] == ["assistant", "user", "assistant"]
    assert rows[2]["content"] == reply["text"]
    await ws.close()


async def test_a_reply_that_comes_at_once_reaches_the_browser_in_few_frames_and_whole(chat: ChatSystem) -> None:
    ws = await chat.ws("ada")
    await ws.start()
    await ws.say("Hello Ada!")  # the local model answers at once: every chunk in one read
    reply = await ws.reply()
    deltas = [f for f in ws.frames if f["type"] == "text"]
    assert (
        "".join(f["text"] for f in deltas)
        == reply["text"]
        == "Hello there! I am glad you came. What shall we talk about?"
    )
    assert len(deltas) < len(reply["text"].split()), "pieces that came together go as one frame"
    await ws.close()


@pytest.fixture
def no_emotion_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENROOM_EMOTION_TAGS", "off")  # before ``chat`` reads the settings


async def test_without_emotion_tags_the_prompt_leaves_them_out_and_the_words_give_the_emotion(
    no_emotion_tags: None, chat: ChatSystem
) -> None:
    chat.llm.script.append(Behaviour(text="Breathe gently. Stay calm, and let the worry pass."))
    ws = await chat.ws("sage")
    await ws.start()
    await ws.say("My cat ran away.")
    reply = await ws.reply()
    assert reply["text"] == "Breathe gently. Stay calm, and let the worry pass."
    assert reply["emotion"] == "calm" and [f["emotion"] for f in ws.frames if f["type"] == "emotion"] == ["calm"]
    system = chat.llm.requests[-1]["body"]["messages"][0]["content"]
    assert system.startswith("You are Sage") and EMOTION_INSTRUCTIONS.split("{")[0] not in system
    await ws.close()


async def test_history_survives_a_reconnect(chat: ChatSystem) -> None:
    ws = await chat.ws("grimm")
    session = (await ws.start())["session_id"]
    await ws.say("Ahoy captain")
    await ws.reply()
    await ws.close()
    again = await chat.ws("grimm")
    status = await again.start(new_session=False, session_id=session)
    assert status["session_id"] == session and status["resumed"] is True
    await again.say("Remember me?")
    await again.reply()
    sent = chat.llm.requests[-1]["body"]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["Ahoy captain", "Remember me?"]
    async with chat.http.get(f"{chat.url}/api/v1/sessions/{session}/messages") as resp:
        history = await resp.json()
    assert [m["speaker"] for m in history["messages"]] == ["assistant", "user", "assistant", "user", "assistant"]
    await again.close()


async def test_new_message_interrupts_the_reply_in_flight(chat: ChatSystem) -> None:
    chat.llm.script.append(Behaviour(text="[happy] " + " ".join(f"word{i}" for i in range(200)), delay=0.02))
    ws = await chat.ws("ada")
    session = (await ws.start())["session_id"]
    await ws.say("Tell me a long story")
    await ws.expect("text")
    await ws.expect("text")
    await ws.say("Stop, something else")
    interrupt = await ws.expect("interrupt")
    assert interrupt["turn"] == 2
    cut = await ws.reply()
    assert cut["interrupted"] is True and cut["turn"] == 1 and 0 < len(cut["text"].split()) < 200
    final = await ws.reply()
    assert final["turn"] == 2 and final["text"].startswith("Hello there")
    # no delta of the old turn after the interrupt frame
    after = ws.frames[ws.frames.index(interrupt) + 1 : ws.frames.index(final)]
    assert not any(f["type"] == "text" and f["text"].startswith("word") for f in after)
    conn = await asyncpg.connect(chat.database_url)
    rows = await conn.fetch(
        "SELECT speaker, turn, metadata FROM messages WHERE session_id = $1 ORDER BY timestamp", session
    )
    await conn.close()
    marked = [r for r in rows if r["speaker"] == "assistant" and r["turn"] == 1]
    assert len(marked) == 1 and json.loads(marked[0]["metadata"])["interrupted"] is True
    await ws.close()


async def blocked_insert(db: asyncpg.Connection) -> None:
    """Returns once another connection's INSERT into messages waits for a lock (PostgreSQL
    tells no one: its activity view is asked every 10 ms, for up to 5 s)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO messages%'"
    )
    for _ in range(500):
        if await db.fetchval(query):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no INSERT into messages waited for the lock")


async def test_the_model_is_asked_only_once_the_message_is_stored(chat: ChatSystem) -> None:
    ws = await chat.ws("ada")
    session = (await ws.start())["session_id"]
    watcher = Collector(chat.endpoints, ("chat.turn",))
    await watcher.start()
    db = await asyncpg.connect(chat.database_url)
    try:
        async with db.transaction():
            await db.execute("LOCK TABLE messages IN EXCLUSIVE MODE")  # a slow database: inserts wait
            before = len(chat.llm.requests)
            await ws.say("Hello Ada!")
            await blocked_insert(db)  # the session manager is storing it, and waits
            assert watcher.count(TurnStarted) == 0, "a turn started before its message was stored"
            assert len(chat.llm.requests) == before, "the model was asked before the message was stored"
            assert not [f for f in ws.frames if f["type"] == "text"]
        reply = await ws.reply()  # the lock is gone: stored, accepted, answered
        assert reply["text"].startswith("Hello there") and len(chat.llm.requests) == before + 1
        assert watcher.count(TurnStarted) == 1
        rows = await db.fetch("SELECT speaker, content FROM messages WHERE session_id = $1 ORDER BY timestamp", session)
        assert [(r["speaker"], r["content"]) for r in rows][1] == ("user", "Hello Ada!")
    finally:
        await db.close()
        await watcher.close()
    await ws.close()


async def test_a_message_that_cannot_be_stored_is_refused_and_never_answered(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text="[happy] Hello there, slowly.", delay=0.01)
    ws = await chat.ws("ada")
    session = (await ws.start())["session_id"]
    before = len(chat.llm.requests)
    await ws.say("hi\u0000there")  # PostgreSQL text cannot hold NUL: the insert fails
    error = await ws.expect("error")
    assert error["code"] == "bad_text" and "cannot be stored as it is" in error["message"]
    await ws.say("Hello Ada!")  # the session goes on
    reply = await ws.reply()
    assert reply["text"] == "Hello there, slowly." and not reply["interrupted"]
    await ws.expect(lambda f: f.get("status") == "idle")
    asked = [r["body"]["messages"][-1]["content"] for r in chat.llm.requests[before:]]
    assert asked == ["Hello Ada!"], "the model was asked about a message that was never stored"
    db = await asyncpg.connect(chat.database_url)
    query = "SELECT speaker, content, turn FROM messages WHERE session_id = $1 ORDER BY timestamp"
    rows = await db.fetch(query, session)
    await db.close()
    assert [(r["speaker"], r["turn"]) for r in rows] == [("assistant", 0), ("user", 1), ("assistant", 1)]
    assert reply["turn"] == 1  # the refused message started no turn
    await ws.close()


@contextlib.asynccontextmanager
async def full_disk(chat: ChatSystem, content: str) -> AsyncIterator[None]:
    """Storing a message with this content fails as on a full disk (a real PostgreSQL error)."""
    db = await asyncpg.connect(chat.database_url)
    await db.execute(
        "CREATE FUNCTION full_disk() RETURNS trigger AS $$ BEGIN"
        " RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$ LANGUAGE plpgsql;"
        "CREATE TRIGGER full_disk BEFORE INSERT ON messages FOR EACH ROW"
        f" WHEN (NEW.content = '{content}') EXECUTE FUNCTION full_disk()"
    )
    try:
        yield
    finally:
        await db.execute("DROP TRIGGER full_disk ON messages; DROP FUNCTION full_disk()")
        await db.close()


async def test_a_database_failure_while_storing_a_message_is_reported_and_the_chat_goes_on(chat: ChatSystem) -> None:
    async with full_disk(chat, "the disk is full now"):
        ws = await chat.ws("ada")
        await ws.start()
        before = len(chat.llm.requests)
        await ws.say("the disk is full now")
        error = await ws.expect("error")
        assert error["code"] == "not_stored" and "send it again" in error["message"]
        await ws.say("Hello Ada!")
        reply = await ws.reply()
        assert reply["turn"] == 1 and reply["text"].startswith("Hello there")
        assert [r["body"]["messages"][-1]["content"] for r in chat.llm.requests[before:]] == ["Hello Ada!"]
        await ws.close()


async def test_a_spoken_message_that_cannot_be_stored_does_not_leave_the_session_listening(chat: ChatSystem) -> None:
    """The speech recognizer's part is played by a peer on the bus: the user starts speaking
    (the session listens), then their final transcript cannot be stored."""
    stt = Connection(chat.endpoints, "test-stt")
    await stt.start()
    async with full_disk(chat, "said on a full disk"):
        try:
            ws = await chat.ws("ada")
            session = (await ws.start())["session_id"]
            await stt.publish(SpeechStarted(), session=session)
            await ws.expect(lambda f: f.get("status") == "listening")
            await stt.publish(UserText("said on a full disk", "voice"), session=session)
            error = await ws.expect("error")
            assert error["code"] == "not_stored"
            assert (await ws.expect("status"))["status"] == "idle"  # next after the error: not listening any more
            await ws.close()
        finally:
            await stt.close()


async def test_two_sessions_never_see_each_other(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text="[happy] One two three four five.", delay=0.01)
    a, b = await chat.ws("ada"), await chat.ws("sage")
    sa, sb = (await a.start())["session_id"], (await b.start())["session_id"]
    assert sa != sb
    await asyncio.gather(a.say("from A"), b.say("from B"))
    await asyncio.gather(a.reply(), b.reply())
    await asyncio.gather(a.expect(lambda f: f.get("status") == "idle"), b.expect(lambda f: f.get("status") == "idle"))
    for ws, theirs in ((a, "from B"), (b, "from A")):
        texts = str(ws.frames)
        assert theirs not in texts
        replies = [f for f in ws.frames if f["type"] == "transcript" and f["speaker"] == "assistant"]
        assert len(replies) == 2  # greeting + its own reply
    await a.close()
    await b.close()


async def test_several_tabs_watch_the_same_session(chat: ChatSystem) -> None:
    one = await chat.ws("ada")
    session = (await one.start())["session_id"]
    two = await chat.ws("ada")
    await two.start(new_session=False, session_id=session)
    await one.say("hello from tab one")
    seen = await two.expect(lambda f: f.get("type") == "transcript" and f["speaker"] == "user")
    assert seen["text"] == "hello from tab one"
    r1, r2 = await one.reply(), await two.reply()
    assert r1["text"] == r2["text"]
    assert not any(f.get("speaker") == "user" for f in one.frames if f["type"] == "transcript")  # no echo to sender
    await one.close()
    await two.close()


async def test_a_reply_written_beside_another_starts_its_speech_with_a_longer_piece(chat: ChatSystem) -> None:
    """Alone, the first piece for the voice is 3 words (speech starts sooner); while another
    reply is being written, 4 (the CPU is shared: the listener needs more in hand)."""
    story = "Once upon a time there was a very small robot who liked tea. The end."
    chat.llm.script.extend([Behaviour(text=story, delay=0.03)] * 3)
    pieces: dict[str, list[str]] = {}
    came = asyncio.Event()

    def sink(report: dict[str, Any]) -> None:
        if "header" in report:
            pieces.setdefault(report["header"]["session"], []).append(report["body"]["text"])
            came.set()

    async def until(enough: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not enough():
                came.clear()
                await came.wait()

    tap = Tap(chat.endpoints, sink, TapFilter(("chat.sentence",)))
    await tap.start()
    try:
        first, second = await chat.ws("ada"), await chat.ws("ada")
        alone, beside = (await first.start())["session_id"], (await second.start())["session_id"]
        await first.say("Tell me a story.")
        await first.expect("text")  # its reply is being written
        await second.say("Tell me another one.")
        assert (await first.reply())["text"] == (await second.reply())["text"] == story
        await until(lambda: len(pieces.get(alone, [])) >= 3 and len(pieces.get(beside, [])) >= 3)
        assert pieces[alone] == ["Once upon a", "time there was a very small robot who liked tea.", "The end."]
        assert pieces[beside] == ["Once upon a time", "there was a very small robot who liked tea.", "The end."]
        # the next reply, written alone again, starts short again
        await second.say("Again?")
        await second.reply()
        await until(lambda: len(pieces[beside]) >= 6)
        assert pieces[beside][3] == "Once upon a"
        await first.close()
        await second.close()
    finally:
        await tap.close()


async def test_a_spoken_reply_also_tells_the_words_of_the_sentence_still_being_written(chat: ChatSystem) -> None:
    """So a TTS worker can say them early when the model is slow to end the sentence; a reply
    only read costs nothing more."""
    story = "Once upon a time there was a very small robot who liked tea. The end."
    chat.llm.script.extend([Behaviour(text=story, delay=0.01)] * 2)
    seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    came = asyncio.Event()

    def sink(report: dict[str, Any]) -> None:
        if "header" in report:
            seen.setdefault(report["header"]["session"], []).append((report["header"]["type"], report["body"]))
            came.set()

    tap = Tap(chat.endpoints, sink, TapFilter(("chat.sentence", "chat.words")))
    await tap.start()
    try:
        spoken, read = await chat.ws("ada"), await chat.ws("ada")
        voice = (await spoken.start(speak=True))["session_id"]
        text = (await read.start())["session_id"]
        await spoken.say("Tell me a story.")
        await spoken.reply()
        await read.say("Tell me a story.")
        await read.reply()
        async with asyncio.timeout(5):
            while sum(kind == "chat.sentence" for kind, _ in seen.get(text, [])) < 3:
                came.clear()
                await came.wait()
        assert [kind for kind, _ in seen[text]] == ["chat.sentence"] * 3  # no words for a reply only read
        words = [body for kind, body in seen[voice] if kind == "chat.words"]
        assert [w["text"] for w in words] == [
            "time", "time there", "time there was", "time there was a", "time there was a very",
            "time there was a very small", "time there was a very small robot",
            "time there was a very small robot who", "time there was a very small robot who liked",
            "The",
        ]  # fmt: skip
        assert {w["first"] for w in words[:-1]} == {3} and words[-1]["first"] == 13  # the words before them
        running: list[str] = []  # each came before its sentence, and is where that sentence begins
        for kind, body in seen[voice]:
            if kind == "chat.words":
                running.append(body["text"])
            else:
                assert all(body["text"].startswith(r) for r in running)
                running.clear()
        assert not running
        await spoken.close()
        await read.close()
    finally:
        await tap.close()
