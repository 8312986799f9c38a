-- Sessions and messages (seeds/001).
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    character   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at    TIMESTAMPTZ,
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX sessions_character_created ON sessions (character, created_at DESC);

CREATE TABLE messages (
    id          UUID PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    speaker     VARCHAR(20) NOT NULL CHECK (speaker IN ('user', 'assistant', 'system')),
    content     TEXT NOT NULL,
    timestamp   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    turn        INTEGER NOT NULL DEFAULT 0,
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX messages_session_time ON messages (session_id, timestamp);
