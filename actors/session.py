"""Session manager: owns sessions, turn numbers and the conversation record.

Every user message is persisted *before* anything acts on it; each one starts a new
turn and interrupts whatever the previous turn was still doing. Replies are recorded
as they were seen, marked interrupted when they were cut off.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from actors.actor import Actor
from actors.db.chat_store import ChatStore, Unstorable
from actors.db.pg import Database
from bus import Envelope
from bus.chat import (
    Accepted,
    ChatError,
    EndSession,
    History,
    HistoryRequest,
    Reply,
    SessionStarted,
    StartSession,
    Status,
    TaskResult,
    TurnStarted,
    UserText,
)  # fmt: skip
from bus.system import Error, Interrupt
from bus.voice import Heard, SpeechStarted, Transcript
from config.characters import load_cards
from config.settings import settings

HISTORY_FOR_PROMPT = 40  # messages handed to the agent; it trims to its token budget
MAX_CACHED = 50_000


@dataclass(slots=True)
class SessionState:
    character: str
    turn: int
    status: str = "idle"
    speak: bool = False
    """Replies are spoken (an audio session, or a text one that asked for speech)."""
    reply_ids: dict[int, str] = field(default_factory=dict)
    """Stored assistant message of recent turns, for what the user heard of them."""
    heard: dict[int, str] = field(default_factory=dict)
    """What the user heard of an interrupted turn whose reply is not stored yet."""
    recent: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=HISTORY_FOR_PROMPT))
    """The last messages, as the agent is given them (this actor is their only writer)."""
    context: list[str] = field(default_factory=list)
    """Results of tasks this chat started, for the agent's next turn."""


class SessionManager(Actor):
    name = "session"
    handles = (
        StartSession, UserText, Reply, HistoryRequest, EndSession, SpeechStarted, Heard, Transcript, TaskResult,
    )  # fmt: skip
    interrupt_cancels = False  # its own work is short and must not be lost
    accept_stale = True  # records replies of interrupted turns too

    async def on_start(self) -> None:
        cfg = settings()
        self._db = Database()
        self._pool = await self._db.open(cfg.database_url, cfg.data_dir, sync_commit=cfg.db_sync_commit)
        self.store = ChatStore(self._pool)
        self.cards = load_cards()
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()

    async def on_stop(self) -> None:
        await self._pool.close()

    async def on_message(self, env: Envelope[Any]) -> None:
        match env.body:
            case StartSession():
                await self._start(env)
            case UserText():
                await self._user_text(env)
            case Reply():
                await self._reply(env)
            case HistoryRequest():
                await self._history(env)
            case EndSession():
                await self.store.end_session(env.session)
                state = self._sessions.get(env.session)
                if state is not None and state.turn > 0:  # nothing of an ended session goes on
                    await self.bus.publish(Interrupt("session ended"), session=env.session, turn=state.turn + 1)
                await self.bus.publish(Status("idle", "Session ended"), cause=env)
            case SpeechStarted():
                await self._barge_in(env)
            case Heard():
                await self._heard(env)
            case TaskResult():
                await self._task_result(env)
            case Transcript(final=True, text=""):  # speech that held no words: stop listening
                state = self._sessions.get(env.session)
                if state is not None and state.status == "listening":
                    state.status = "idle"
                    await self.bus.publish(Status("idle", "Didn't catch that"), cause=env)

    async def _state(self, session: str) -> SessionState | None:
        state = self._sessions.get(session)
        if state is None:
            character = await self.store.session_character(session)
            if character is None:
                return None
            state = SessionState(character, await self.store.latest_turn(session))
            for m in await self.store.messages(session, HISTORY_FOR_PROMPT):
                state.recent.append({"speaker": m.speaker, "text": m.content})
            self._sessions[session] = state
            if len(self._sessions) > MAX_CACHED:
                self._sessions.popitem(last=False)
        return state

    async def _start(self, env: Envelope[Any]) -> None:
        body: StartSession = env.body
        if body.character not in self.cards:
            await self.bus.publish(Error("unknown_character", f"no character {body.character!r}"), cause=env)
            return
        speak = body.speak or body.input_type == "audio"
        if not body.new_session and body.resume:
            state = await self._state(body.resume)
            if state is not None and state.character == body.character:
                state.speak = speak
                await self.bus.publish(SessionStarted(body.resume, body.character, True), cause=env)
                return
        session = await self.store.create_session(body.character)
        greeting = self.cards[body.character].greeting
        state = self._sessions[session] = SessionState(body.character, 0, speak=speak)
        if greeting:
            await self.store.add_message(session, "assistant", greeting, 0, {"greeting": True})
            state.recent.append({"speaker": "assistant", "text": greeting})
        await self.bus.publish(SessionStarted(session, body.character, False, greeting), cause=env)

    async def _user_text(self, env: Envelope[Any]) -> None:
        body: UserText = env.body
        state = await self._state(env.session)
        if state is None:
            await self.bus.publish(Error("no_session", f"no session {env.session!r}", ref=env.id), cause=env)
            return
        turn = state.turn + 1
        try:
            message_id = await self.store.add_message(env.session, "user", body.text, turn, {"source": body.source})
        except Exception as exc:  # nothing acts on a message that is not stored: the user is told
            await self._not_stored(env, exc, state)
            return
        state.turn = turn  # persisted first, then it counts
        history = tuple(state.recent)
        state.recent.append({"speaker": "user", "text": body.text})
        state.status = "thinking"
        # Hot path first: stop the old turn, start the new one; then tell the clients.
        await self.bus.publish(Interrupt("new user message"), session=env.session, turn=turn, parent=env.id)
        speak = state.speak or body.source == "voice"
        context = "\n\n".join(state.context)
        state.context.clear()
        await self.bus.publish(
            TurnStarted(state.character, body.text, history, speak, context),
            session=env.session, turn=turn, parent=env.id,
        )  # fmt: skip
        await self.bus.publish(Accepted(message_id, turn), session=env.session, turn=turn, parent=env.id)
        await self.bus.publish(Status("thinking", "Thinking…"), session=env.session, turn=turn, parent=env.id)

    async def _not_stored(self, env: Envelope[Any], exc: Exception, state: SessionState) -> None:
        if isinstance(exc, Unstorable):
            code, text = "bad_text", f"Your message cannot be stored as it is ({exc}), so it was not answered."
        else:
            self.log.error("user message not stored", session=env.session, error=f"{type(exc).__name__}: {exc}")
            code, text = "not_stored", "Your message could not be stored (a database failure); send it again."
        if env.body.source == "voice":  # no request waits for the answer: every watcher of the session is told
            await self.bus.publish(ChatError(code, text), cause=env)
        else:
            await self.bus.publish(Error(code, text, ref=env.id), cause=env)
        if state.status == "listening":  # what the user said was not taken: no reply is coming
            state.status = "idle"
            await self.bus.publish(Status("idle", "Ready"), cause=env)

    async def _reply(self, env: Envelope[Any]) -> None:
        body: Reply = env.body
        state = await self._state(env.session)
        if state is None:
            return
        interrupted = body.interrupted or env.turn < state.turn
        if body.text:
            meta: dict[str, Any] = {"emotion": body.emotion, "interrupted": interrupted}
            if body.error:
                meta["error"] = body.error
            text = body.text
            heard = state.heard.pop(env.turn, None)
            if heard is not None:  # spoken and cut off: history keeps what was heard
                meta["generated"], meta["heard"], text = text, True, heard
            state.reply_ids[env.turn] = await self.store.add_message(env.session, "assistant", text, env.turn, meta)
            while len(state.reply_ids) > 8:
                state.reply_ids.pop(next(iter(state.reply_ids)))
            state.recent.append({"speaker": "assistant", "text": text})
        if env.turn == state.turn and state.status != "listening":  # a barge-in's reply end is not "idle"
            state.status = "idle"
            await self.bus.publish(Status("idle", "Ready"), cause=env)

    async def _barge_in(self, env: Envelope[Any]) -> None:
        """The user started speaking: whatever the character is saying stops now."""
        state = await self._state(env.session)
        if state is None:
            return
        if state.turn > 0:
            await self.bus.publish(Interrupt("user speaking"), session=env.session, turn=state.turn + 1, parent=env.id)
        state.status = "listening"
        await self.bus.publish(Status("listening", "Listening…"), session=env.session, turn=state.turn, parent=env.id)

    async def _task_result(self, env: Envelope[Any]) -> None:
        """A task this chat started is over: record it, and tell the agent on the next turn."""
        body: TaskResult = env.body
        state = await self._state(env.session)
        if state is None:
            return
        outcome = {"done": "found", "failed": "could not finish", "cancelled": "was cancelled"}.get(body.state, "ended")
        text = f"The analysts {outcome} on “{body.query}”: {body.answer}"
        meta = {"task_id": body.task_id, "state": body.state}
        await self.store.add_message(env.session, "system", text, state.turn, meta)
        state.context.append(
            f"Result of the work you asked the analysts for ({body.query!r}, {body.state}): {body.answer}\n"
            "If the user asks about it, answer from this result."
        )

    async def _heard(self, env: Envelope[Any]) -> None:
        state = await self._state(env.session)
        if state is None:
            return
        text: str = env.body.text
        message_id = state.reply_ids.get(env.turn)
        if message_id is None:
            state.heard[env.turn] = text  # the reply is not stored yet: applied when it is
            return
        await self.store.record_heard(message_id, text)
        for item in reversed(state.recent):
            if item["speaker"] == "assistant":
                item["text"] = text
                break

    async def _history(self, env: Envelope[Any]) -> None:
        state = await self._state(env.session)
        if state is None:
            await self.bus.publish(History(False), cause=env)
            return
        messages = await self.store.messages(env.session, max(1, min(env.body.limit, 1000)))
        await self.bus.publish(History(True, state.character, tuple(m.public() for m in messages)), cause=env)
