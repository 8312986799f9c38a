-- Telemetry (seeds/000): sessions and events as the bus carried them, and a latency
-- ledger per turn. Events are written in batches with COPY; headers and bodies are kept
-- as the msgpack the bus carried (decoded when read), payload frames only by size.
CREATE TABLE telemetry_sessions (
    session_id  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL DEFAULT 'chat',   -- chat | task | system
    character   TEXT,
    first_seen  DOUBLE PRECISION NOT NULL,     -- unix seconds
    last_seen   DOUBLE PRECISION NOT NULL,
    events      BIGINT NOT NULL DEFAULT 0,
    turns       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX telemetry_sessions_recent ON telemetry_sessions (last_seen DESC);

CREATE TABLE telemetry_events (
    ts          DOUBLE PRECISION NOT NULL,      -- when the sink received it (unix seconds)
    session_id  TEXT NOT NULL,
    type        TEXT NOT NULL,
    header      BYTEA NOT NULL,                 -- msgpack, as on the bus: id, turn, parent, src, ts, mono…
    body        BYTEA NOT NULL,                 -- msgpack, as on the bus
    extra_bytes INTEGER NOT NULL DEFAULT 0      -- payload frames (audio), by size only
);
CREATE INDEX telemetry_events_session ON telemetry_events (session_id, ts);

CREATE TABLE telemetry_turns (
    session_id  TEXT NOT NULL,
    turn        INTEGER NOT NULL,
    character   TEXT,
    provider    TEXT,
    source      TEXT,                           -- ws | rest | voice
    started_at  DOUBLE PRECISION NOT NULL,      -- the ledger's zero: input received (or end of speech)
    hops        JSONB NOT NULL DEFAULT '{}'::jsonb,  -- name -> ms after started_at
    ttft_ms     DOUBLE PRECISION,                          -- first LLM token
    ttfa_ms     DOUBLE PRECISION,                          -- first audio out of the edge
    total_ms    DOUBLE PRECISION,                          -- reply complete
    interrupted BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (session_id, turn)
);
CREATE INDEX telemetry_turns_recent ON telemetry_turns (started_at DESC);
