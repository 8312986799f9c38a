"""Task logic with no I/O: steps and their user-facing words (seeds/004), plans, SQL safety,
charts and plain-words summaries of tables."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# -- steps (seeds/004) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepInfo:
    message: str
    icon: str
    category: str
    """``thinking`` (amber), ``action`` (blue), ``check`` (green), ``error`` (red)."""
    progress: int | None
    """Overall progress when the step starts; None: keep the current progress."""


STEPS: Mapping[str, StepInfo] = {
    "classify_intent": StepInfo("Understanding your question...", "💭", "thinking", 0),
    "fetch_context": StepInfo("Looking up your data structure...", "🔍", "thinking", 15),
    "generate_sql": StepInfo("Writing the database query...", "⚡", "action", 30),
    "validate_sql": StepInfo("Double-checking the query...", "✓", "check", 45),
    "execute_sql": StepInfo("Fetching your data...", "📊", "action", 60),
    "analyze_error": StepInfo("Looking into the issue...", "🔧", "error", None),
    "call_tool": StepInfo("Using a tool...", "🛠", "action", None),
    "analyze_results": StepInfo("Finding patterns in your data...", "📈", "thinking", 75),
    "generate_viz": StepInfo("Creating your visualization...", "📉", "action", 90),
    "retry": StepInfo("Something went wrong on our side; trying again...", "🔁", "error", None),
    "error": StepInfo("Something went wrong.", "❌", "error", None),
    "end": StepInfo("Done!", "✅", "check", 100),
}
WORKFLOWS = ("analytics", "tools", "answer")
TERMINAL = ("done", "failed", "cancelled")


def step_event(
    step: str, status: str, *, message: str = "", progress: int = 0, data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A stream event ``{step, status, message, icon, progress, category}``; ``progress`` is
    the task's current progress, raised to the step's own when it has one (never lowered)."""
    info = STEPS.get(step, StepInfo(step.replace("_", " ").capitalize() + "...", "•", "action", None))
    if info.progress is not None and status in ("running", "done", "skipped", "cancelled", "failed"):
        progress = max(progress, info.progress) if step != "end" or status == "done" else progress
    icon = info.icon if status not in ("failed", "cancelled") else "⏹" if status == "cancelled" else "❌"
    event: dict[str, Any] = {
        "step": step,
        "status": status,
        "message": message or info.message,
        "icon": icon,
        "progress": progress,
        "category": "error" if status == "failed" else info.category,
    }
    if data:
        event["data"] = dict(data)
    return event


def tool_progress(index: int, total: int) -> int:
    """Progress while running tool step ``index`` of ``total`` (between fetch and analysis)."""
    return 15 + (60 * index) // max(total, 1)


# -- plans ---------------------------------------------------------------------------------

_DATA_WORDS = re.compile(
    r"\b(revenue|sales|orders?|customers?|products?|regions?|month(ly)?|quarter|year|how many|average|total|top|"
    r"trend|sum|count|best|worst|growth|sold|spent|price)\b",
    re.I,
)
_FILE_WORDS = re.compile(r"\b(files?|folders?|director(y|ies)|documents?|notes?|read|list|contents?)\b", re.I)

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "workflow": {"type": "string", "enum": list(WORKFLOWS)},
        "steps": {
            "type": "array",
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {"tool": {"type": "string"}, "arguments": {"type": "object"}},
                "required": ["tool", "arguments"],
            },
        },
    },
    "required": ["workflow", "steps"],
}


class PlanError(ValueError):
    """A plan a model wrote is not usable; the text says why."""


def classify(query: str, tools_available: bool) -> str:
    """The fixed-workflow choice when no model plan is usable."""
    if _DATA_WORDS.search(query):
        return "analytics"
    if tools_available and _FILE_WORDS.search(query):
        return "tools"
    return "answer"


def parse_plan(text: str, tools: Mapping[str, Any]) -> tuple[str, tuple[dict[str, Any], ...]]:
    """Read a model's plan (JSON per :data:`PLAN_SCHEMA`); tools must be ones we have."""
    try:
        doc = json.loads(_strip_fence(text))
    except ValueError as exc:
        raise PlanError(f"the plan is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("workflow") not in WORKFLOWS:
        raise PlanError(f"the plan needs a workflow, one of {', '.join(WORKFLOWS)}")
    raw = doc.get("steps") or []
    if not isinstance(raw, list):
        raise PlanError("steps must be a list")
    steps = tuple(check_tool_step(s, tools) for s in raw[:8])
    if doc["workflow"] == "tools" and not steps:
        raise PlanError("a tools plan needs at least one tool step")
    return str(doc["workflow"]), steps if doc["workflow"] == "tools" else ()


def check_tool_step(step: Any, tools: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(step, dict) or not isinstance(step.get("tool"), str):
        raise PlanError(f"a step must be {{'tool', 'arguments'}}, not {step!r:.100}")
    args = step.get("arguments", {})
    if isinstance(args, str):  # function-calling models send arguments as a JSON string
        try:
            args = json.loads(args or "{}")
        except ValueError:
            raise PlanError(f"arguments of {step['tool']} are not JSON") from None
    if not isinstance(args, dict):
        raise PlanError(f"arguments of {step['tool']} must be an object")
    name = step["tool"] if "." in step["tool"] else step["tool"].replace("__", ".", 1)
    if name not in tools:
        raise PlanError(f"no tool {step['tool']!r}; known: {', '.join(sorted(tools)) or 'none'}")
    return {"tool": name, "arguments": args}


def _strip_fence(text: str) -> str:
    match = re.search(r"```(?:json|sql)?\s*(.*?)```", text, re.S | re.I)
    return (match.group(1) if match else text).strip()


# -- SQL safety ----------------------------------------------------------------------------


class UnsafeSQL(ValueError):
    """A query we will not run; the text says why in words a user understands."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--|/\*)
  | (?P<string>'(?:[^']|'')*')
  | (?P<badstring>')
  | (?P<quoted>"(?:[^"]|"")+")
  | (?P<dollar>\$[A-Za-z_0-9]*\$)
  | (?P<param>\$\d+)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
  | (?P<op>::|<=|>=|<>|!=|\|\||[-+*/%<>=(),.;\[\]^~!&|#@:?{}])
    """,
    re.X,
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FORBIDDEN = _words(
    "insert update delete merge drop alter create truncate grant revoke copy call do execute prepare "
    "deallocate lock vacuum analyze cluster reindex set reset into listen notify unlisten refresh comment "
    "security begin commit rollback savepoint release checkpoint discard load import"
)
# Functions a read-only analytics query may call; anything else (pg_sleep, set_config,
# dblink, lo_*, pg_read_file…) is refused by name before the database ever sees it.
ALLOWED_FUNCTIONS = _words(
    "count sum avg min max round trunc floor ceil ceiling abs coalesce nullif greatest least date_trunc "
    "date_part extract to_char to_date lower upper length trim substring concat now current_date cast "
    "stddev variance percentile_cont percentile_disc mode rank dense_rank row_number lag lead first_value "
    "last_value ntile string_agg array_agg bool_and bool_or every make_date age interval exists any all "
    "split_part replace left right lpad rpad initcap sign sqrt power ln log exp mod"
)
_NOT_FUNCTIONS = _words(
    "in as over filter and or not on from join select values case when then else where using within group "
    "by having limit offset distinct union intersect except lateral"
)
_FROM_END = _words(
    "where group order limit offset having window union intersect except on join left right inner outer "
    "full cross natural using fetch"
)


def validate_sql(sql: str, allowed_tables: Iterable[str], schema: str = "demo") -> str:
    """Return the query (one read-only SELECT over ``allowed_tables``) or raise :class:`UnsafeSQL`."""
    allowed = {t.lower() for t in allowed_tables}
    text = sql.strip()
    if not text:
        raise UnsafeSQL("the query is empty")
    tokens = _tokenize(text)
    while tokens and tokens[-1] == ("op", ";"):
        tokens.pop()
    if ("op", ";") in tokens:
        raise UnsafeSQL("only one statement is allowed (found ';' between statements)")
    ctes = _check_tokens(tokens, schema)  # first: "DELETE is not allowed" says more than "not a SELECT"
    if not tokens or tokens[0] not in (("word", "select"), ("word", "with")):
        raise UnsafeSQL("only a SELECT query is allowed")
    for i, (kind, value) in enumerate(tokens):
        if kind == "word" and value in ("from", "join"):
            _check_from(tokens, i + 1, allowed | ctes, schema, single=value == "join")
    return text.rstrip().rstrip(";").rstrip()


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise UnsafeSQL(f"unexpected character {text[pos]!r} at position {pos}")
        kind = match.lastgroup or ""
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "comment":
            raise UnsafeSQL("comments are not allowed in a query")
        if kind == "badstring":
            raise UnsafeSQL("a string literal is not closed")
        if kind == "dollar":
            raise UnsafeSQL("dollar-quoted strings are not allowed")
        if kind == "param":
            raise UnsafeSQL("parameters ($1) are not allowed")
        value = match.group(kind)
        tokens.append((kind, value.lower() if kind == "word" else value))
    return tokens


def _check_tokens(tokens: list[tuple[str, str]], schema: str) -> set[str]:
    """Refuse writes, unknown functions, other schemas; return the names of CTEs."""
    ctes: set[str] = set()
    for i, (kind, value) in enumerate(tokens):
        if kind == "word" and value in _FORBIDDEN:
            raise UnsafeSQL(f"{value.upper()} is not allowed: queries may only read")
        if kind == "word" and value in ("for",) and i + 1 < len(tokens) and tokens[i + 1][1] in ("update", "share"):
            raise UnsafeSQL("row locks (FOR UPDATE/SHARE) are not allowed")
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "word" and following == ("op", "(") and value not in _NOT_FUNCTIONS:
            previous = tokens[i - 1] if i else ("", "")
            if previous == ("op", "."):
                raise UnsafeSQL(f"schema-qualified functions are not allowed ({value})")
            if value not in ALLOWED_FUNCTIONS and not (previous == ("word", "as") or _is_cte_name(tokens, i)):
                raise UnsafeSQL(f"function {value}() is not allowed")
        if kind == "quoted":
            raise UnsafeSQL("quoted identifiers are not allowed")
        if kind == "word" and following == ("op", "."):
            target = tokens[i + 2] if i + 2 < len(tokens) else ("", "")
            if value != schema and target[0] == "word" and _names_table(tokens, i):
                raise UnsafeSQL(f"only the {schema} schema may be read, not {value}")
        if (kind == "word" and value == "with") or (kind == "op" and value == "," and _in_with(tokens, i)):
            names = [t for t in tokens[i + 1 : i + 3] if t != ("word", "recursive")]
            if names and names[0][0] == "word":
                ctes.add(names[0][1])
    return ctes


def _is_cte_name(tokens: list[tuple[str, str]], i: int) -> bool:
    """``name (cols) AS (…)`` inside WITH."""
    return i > 0 and tokens[i - 1] in (("word", "with"), ("op", ","), ("word", "recursive"))


def _in_with(tokens: list[tuple[str, str]], i: int) -> bool:
    """Whether the comma at ``i`` separates CTEs: depth 0 before the first top-level SELECT."""
    if tokens[0] != ("word", "with"):
        return False
    depth = 0
    for kind, value in tokens[:i]:
        if value == "(":
            depth += 1
        elif value == ")":
            depth -= 1
        elif depth == 0 and (kind, value) == ("word", "select"):
            return False
    return depth == 0


def _names_table(tokens: list[tuple[str, str]], i: int) -> bool:
    """``x.y`` is schema.table only right after FROM/JOIN (otherwise it is alias.column)."""
    return i > 0 and tokens[i - 1] in (("word", "from"), ("word", "join"), ("op", ","))


def _check_from(tokens: list[tuple[str, str]], i: int, allowed: set[str], schema: str, single: bool) -> None:
    while i < len(tokens):
        kind, value = tokens[i]
        if value == "(":  # a subquery: its own FROM is checked on its own
            depth = 0
            while i < len(tokens):
                depth += tokens[i][1] == "("
                depth -= tokens[i][1] == ")"
                i += 1
                if depth == 0:
                    break
        elif kind == "word" and value in ("lateral", "only"):
            i += 1
            continue
        elif kind == "word":
            name = value
            if i + 2 < len(tokens) and tokens[i + 1] == ("op", "."):
                if value != schema:
                    raise UnsafeSQL(f"only the {schema} schema may be read, not {value}")
                name = tokens[i + 2][1]
                i += 2
            if name not in allowed:
                raise UnsafeSQL(f"table {name} is not one of the tables you may query ({', '.join(sorted(allowed))})")
            i += 1
        else:
            raise UnsafeSQL(f"unexpected {value!r} after FROM")
        # an alias, then maybe a comma and another table
        if i < len(tokens) and tokens[i] == ("word", "as"):
            i += 1
        if i < len(tokens) and tokens[i][0] == "word" and tokens[i][1] not in _FROM_END:
            i += 1
        if single or i >= len(tokens) or tokens[i] != ("op", ","):
            return
        i += 1


def extract_sql(text: str) -> str:
    """The query in a model's answer: a fenced block, else from the first SELECT/WITH on."""
    fenced = re.search(r"```(?:sql|postgresql)?\s*(.*?)```", text, re.S | re.I)
    if fenced:
        return fenced.group(1).strip()
    start = re.search(r"\b(select|with)\b", text, re.I)
    return text[start.start() :].strip() if start else text.strip()


# -- results -------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A database value as JSON can carry it (numbers stay numbers, dates become ISO text)."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _numeric(values: Sequence[Any]) -> bool:
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def chart_for(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any] | None:
    """A chart spec when the table is worth plotting: one label column and numeric series,
    2–200 rows. Line for dates/months, bar otherwise."""
    if not 2 <= len(rows) <= 200 or len(columns) < 2:
        return None
    cols = list(zip(*rows, strict=True))
    numeric = [i for i, c in enumerate(cols) if _numeric(c)]
    labels = [i for i in range(len(columns)) if i not in numeric]
    if not numeric or len(labels) > 1:
        return None
    x = labels[0] if labels else 0
    series = [i for i in numeric if i != x][:4]
    if not series:
        return None
    temporal = all(isinstance(v, str) and re.match(r"\d{4}-\d{2}", v) for v in cols[x])
    return {
        "type": "line" if temporal else "bar",
        "x": columns[x],
        "labels": [str(v) for v in cols[x]],
        "series": [{"name": columns[i], "values": list(cols[i])} for i in series],
    }


def describe_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], truncated: bool = False) -> str:
    """A plain-words summary of a result table (the answer when no model is at hand)."""
    if not rows:
        return "The query ran but found no matching data."
    if len(rows) == 1 and len(columns) <= 4:
        parts = [f"{c} = {_fmt(v)}" for c, v in zip(columns, rows[0], strict=True)]
        return "Result: " + ", ".join(parts) + "."
    text = [f"{len(rows)}{'+' if truncated else ''} rows."]
    cols = list(zip(*rows, strict=True))
    for name, values in zip(columns, cols, strict=True):
        if _numeric(values):
            total = sum(values)
            high = max(range(len(values)), key=lambda k: values[k])
            label = _fmt(rows[high][0]) if not _numeric(cols[0]) else f"row {high + 1}"
            text.append(f"{name}: total {_fmt(total)}, highest {_fmt(values[high])} ({label}).")
    return " ".join(text)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
