"""Chat messages: the conversation between the edge, session manager, orchestrator and agents.

The session and turn of each message are in its header; bodies carry only the rest.
"""

from __future__ import annotations

from typing import Any

from bus.message import Message, message


@message("chat.start")
class StartSession(Message):
    """A client opens (or resumes) a session with a character. Answered by ``chat.started``."""

    character: str
    """Card name."""
    new_session: bool = True
    """False: resume ``resume`` (or this client's latest session with the character)."""
    resume: str = ""
    """Session id the client remembers, if any."""
    input_type: str = "text"
    """``text`` or ``audio``."""
    speak: bool = False
    """Spoken replies wanted (always for audio sessions)."""


@message("chat.started")
class SessionStarted(Message):
    """The session a client is now attached to."""

    session: str
    """Session id."""
    character: str
    """Card name."""
    resumed: bool
    """True when an existing session was resumed."""
    greeting: str = ""
    """The character's greeting, for a new session."""


@message("chat.user_text")
class UserText(Message):
    """The user said or typed something. Answered by ``chat.accepted`` once persisted."""

    text: str
    """What the user said."""
    source: str = "ws"
    """``ws``, ``rest`` or ``voice`` (a final transcript)."""
    client: str = ""
    """Edge connection that sent it (other tabs of the session are shown it)."""


@message("chat.accepted")
class Accepted(Message):
    """The user's message is persisted and became turn ``turn``."""

    message_id: str
    """Database id of the stored message."""
    turn: int
    """The turn it started."""


@message("chat.turn")
class TurnStarted(Message):
    """A user turn to answer (session manager -> orchestrator)."""

    character: str
    """Card name."""
    text: str
    """The user's words."""
    history: tuple[dict[str, Any], ...] = ()
    """Earlier messages, oldest first: ``{"speaker", "text"}``."""
    speak: bool = False
    """The reply is to be spoken (TTS workers take its sentences)."""
    context: str = ""
    """Facts for the agent's next reply (a finished task's result)."""


@message("chat.routed")
class Routed(Message):
    """The orchestrator's decision for a turn."""

    agent: str
    """``character`` or ``task``."""
    reason: str = ""
    """Why."""


@message("chat.generate")
class Generate(Message):
    """Work for a character agent (orchestrator -> ``character`` queue)."""

    character: str
    """Card name."""
    text: str
    """The user's words."""
    history: tuple[dict[str, Any], ...] = ()
    """Earlier messages, oldest first."""
    context: str = ""
    """Extra facts to tell the model (e.g. a finished task's result)."""
    speak: bool = False
    """The reply is to be spoken: the agent also sends the words of each sentence still being
    written (``Words``)."""


@message("chat.delta")
class Delta(Message):
    """A piece of the reply, as generated."""

    text: str
    """The new text."""
    index: int
    """0, 1, 2… within the turn."""


@message("chat.sentence")
class Sentence(Message):
    """A complete sentence of the reply (what a TTS worker speaks)."""

    text: str
    """The sentence."""
    index: int
    """0, 1, 2… within the turn."""


@message("chat.words")
class Words(Message):
    """The complete words of a spoken reply's sentence still being written (character agent ->
    TTS workers), sent again as each word is complete: a TTS worker whose listener is about to
    run out of speech while the model is slow to end the sentence says them early, and leaves
    them out of the ``Sentence`` when it comes."""

    text: str
    """All complete words written since the last ``Sentence``."""
    first: int
    """Words of the reply before them (all sent in ``Sentence``s)."""


@message("chat.emotion")
class Emotion(Message):
    """The character's emotion for this turn."""

    emotion: str
    """One of the card's emotions."""


@message("chat.reply")
class Reply(Message):
    """The reply is over: complete, interrupted, or failed."""

    text: str
    """Everything generated (what the user saw)."""
    emotion: str = ""
    """Emotion shown."""
    interrupted: bool = False
    """True when a newer turn cut it short."""
    error: str = ""
    """Error code when the provider failed."""
    provider: str = ""
    """Which model answered, and where (``MODEL@HOST``), for the latency ledger."""


@message("chat.status")
class Status(Message):
    """Session state for the client: ``idle``, ``thinking``, ``speaking``, ``listening``."""

    status: str
    """The state."""
    message: str = ""
    """Human-readable text."""


@message("chat.error")
class ChatError(Message):
    """Something the user should know went wrong."""

    code: str
    """Stable code: ``llm_auth``, ``llm_rate_limited``, ``llm_unavailable``, ``llm_timeout``…"""
    message: str
    """Explanation for the user."""


@message("chat.history_request")
class HistoryRequest(Message):
    """Ask the session manager for a session's messages. Answered by ``chat.history``."""

    limit: int = 200
    """Most recent messages to return."""


@message("chat.history")
class History(Message):
    """A session's messages, oldest first."""

    found: bool
    """False when no such session exists."""
    character: str = ""
    """Card name."""
    messages: tuple[dict[str, Any], ...] = ()
    """``{"id", "speaker", "content", "timestamp", "metadata"}``."""


@message("chat.end")
class EndSession(Message):
    """The client ended the session."""

    reason: str = ""
    """Why."""


@message("chat.agent_notification")
class AgentNotification(Message):
    """A task started from this chat made progress (seeds/003 ``agent_notification``)."""

    text: str
    """What happened, in user-friendly words."""
    source: str
    """Which agent: ``planner``, ``executor``, ``analyzer`` or ``tasks``."""
    status: str
    """The step's status: ``running``, ``done``, ``failed``…"""
    task_id: str = ""
    """The task."""
    step: str = ""
    """Technical step name."""
    progress: int = 0
    """Overall progress, percent."""


@message("chat.task_result")
class TaskResult(Message):
    """A task started from this chat is over; its answer joins the conversation."""

    task_id: str
    """The task."""
    query: str
    """What was asked."""
    state: str
    """``done``, ``failed`` or ``cancelled``."""
    answer: str = ""
    """The analyzer's answer, or why it failed."""
