"""Task messages: headless agent work (seeds/003, seeds/004).

A task's id is the ``session`` of every message about it and its attempt is the ``turn``:
when the task manager retries a task (its worker died) or cancels it, it publishes a
``sys.interrupt`` for the next attempt, so whatever the old attempt still does is
cancelled and its late output recognised as stale.

The task manager coordinates: it pushes each stage's work (``planner``, ``executor``,
``analyzer`` queues), hears the stage's outcome as an event, persists it, and pushes the
next stage. Workers report progress with :class:`TaskStep`; the manager persists each one
and republishes it, numbered, as :class:`TaskProgress` (what SSE streams carry).
"""

from __future__ import annotations

from typing import Any

from bus.message import Message, message

PLANNER, EXECUTOR, ANALYZER = "planner", "executor", "analyzer"


@message("task.submit")
class SubmitTask(Message):
    """Start a task. Answered by ``task.accepted`` (or ``sys.error``)."""

    query: str
    """What the user asked."""
    user_id: str = ""
    """Who owns it (streams and results are theirs)."""
    chat_session: str = ""
    """The chat session that asked, if any: it gets notifications and the result."""


@message("task.accepted")
class TaskAccepted(Message):
    """The task is persisted and queued."""

    task_id: str
    """The workflow id."""


@message("task.plan")
class PlanTask(Message):
    """Work for a planner."""

    query: str
    """What the user asked."""


@message("task.planned")
class Planned(Message):
    """A planner's plan."""

    workflow: str
    """``analytics``, ``tools`` or ``answer``."""
    steps: tuple[dict[str, Any], ...] = ()
    """Tool steps ``{"tool", "arguments"}`` (``tools``); empty otherwise."""
    reason: str = ""
    """How the plan was made (model, or the fixed workflow and why)."""


@message("task.execute")
class ExecuteTask(Message):
    """Work for an executor: run the plan's steps."""

    query: str
    """What the user asked."""
    workflow: str
    """Which steps to run."""
    steps: tuple[dict[str, Any], ...] = ()
    """Tool steps, for ``tools``."""
    depth: int = 1
    """Tool rounds so far, this one included (bounded by the executor's depth limit)."""
    results: tuple[dict[str, Any], ...] = ()
    """Results of earlier rounds."""


@message("task.executed")
class Executed(Message):
    """An executor finished its steps."""

    results: tuple[dict[str, Any], ...] = ()
    """Tool results ``{"tool", "arguments", "ok", "output"}``, all rounds so far."""
    table: dict[str, Any] | None = None
    """SQL result ``{"sql", "columns", "rows", "row_count", "truncated"}``, for ``analytics``."""


@message("task.analyze")
class AnalyzeTask(Message):
    """Work for an analyzer: judge the results, answer."""

    query: str
    """What the user asked."""
    workflow: str
    """Which workflow produced the results."""
    depth: int = 1
    """Tool rounds so far."""
    results: tuple[dict[str, Any], ...] = ()
    """Tool results."""
    table: dict[str, Any] | None = None
    """SQL result."""


@message("task.analyzed")
class Analyzed(Message):
    """The analyzer's verdict: an answer, or more tool steps to run first."""

    answer: str = ""
    """The answer for the user."""
    chart: dict[str, Any] | None = None
    """A chart of the table, when worth plotting."""
    more_steps: tuple[dict[str, Any], ...] = ()
    """Tool steps still needed (another executor round)."""


@message("task.failed")
class StageFailed(Message):
    """A worker could not do its stage; the task fails with this error."""

    code: str
    """Stable code: ``unsafe_sql``, ``sql_failed``, ``llm_*``, ``tool_failed``…"""
    message: str
    """Explanation for the user."""


@message("task.claimed")
class Claimed(Message):
    """A worker took a stage's work (so the manager knows whose death would strand it)."""

    stage: str
    """``planner``, ``executor`` or ``analyzer``."""
    pid: int
    """The worker's OS process."""


@message("task.step")
class TaskStep(Message):
    """A worker's progress on one step (persisted, numbered and streamed by the manager)."""

    step: str
    """Technical step name (seeds/004): ``fetch_context``, ``execute_sql``…"""
    status: str
    """``running``, ``done``, ``failed`` or ``skipped``."""
    message: str = ""
    """User-friendly text; empty: the step's standard message."""
    data: dict[str, Any] | None = None
    """Step details (the SQL, a tool's name, row counts…)."""


@message("task.progress")
class TaskProgress(Message):
    """One persisted task event, as streams show it."""

    event: dict[str, Any]
    """``{id, step, status, message, icon, progress, category, ts, data?}``."""
    final: bool = False
    """The task's last event (``end``)."""


@message("task.replay")
class ReplayRequest(Message):
    """Ask for a task's events after ``after``. Answered by ``task.events``.

    Sent with a session of its own (not the task's), so that a burst of streams
    connecting to a busy task is answered at once instead of queueing behind the
    task's own progress; the manager reads only what it has already persisted."""

    task_id: str
    """The task."""
    after: int = 0
    """Last event id the client has (Last-Event-ID)."""


@message("task.events")
class TaskEvents(Message):
    """A task's events after the asked id."""

    found: bool
    """False: no such task."""
    owner: str = ""
    """The task's user."""
    state: str = ""
    """``queued``, ``running``, ``done``, ``failed``, ``cancelled``."""
    events: tuple[dict[str, Any], ...] = ()
    """Oldest first."""
    finished: bool = False
    """The task is over: its ``end`` event exists."""


@message("task.get")
class GetTask(Message):
    """Ask for a task's state and result. Answered by ``task.info``."""


@message("task.cancel")
class CancelTask(Message):
    """Cancel a task. Answered by ``task.info`` (its state after the request)."""

    reason: str = "cancelled by the user"
    """Why."""


@message("task.info")
class TaskInfo(Message):
    """A task's state and result."""

    found: bool
    """False: no such task."""
    task: dict[str, Any] | None = None
    """``{id, query, user_id, state, progress, created_at, updated_at, result, error}``."""
    changed: bool = False
    """For a cancel: whether this request changed the state."""


@message("task.expire")
class TaskExpired(Message):
    """The task manager's watchdog, to itself: a task ran out of time or lost its worker."""

    reason: str
    """``timeout`` or ``worker_lost``."""
    pid: int = 0
    """The lost worker's process."""


@message("task.tools_request")
class ToolsRequest(Message):
    """Which tools can the executors call? Answered by ``task.tools``."""


@message("task.tools")
class ToolCatalog(Message):
    """An executor's tools, as OpenAI function tools, and the servers it could not start."""

    tools: tuple[dict[str, Any], ...] = ()
    """``{"type": "function", "function": {name, description, parameters}}``."""
    unavailable: dict[str, str] | None = None
    """Server name -> why it is not available."""
