-- Agent tasks (seeds/003, seeds/004): each task and its numbered event log.
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL DEFAULT '',
    query       TEXT NOT NULL,
    chat_session TEXT,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    stage       TEXT NOT NULL DEFAULT 'planner',
    attempt     INTEGER NOT NULL DEFAULT 1,
    work        JSONB,                  -- the current stage's work item (re-pushed on retry)
    progress    INTEGER NOT NULL DEFAULT 0,
    result      JSONB,
    error       JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tasks_open ON tasks (state) WHERE state IN ('queued', 'running');
CREATE INDEX tasks_user ON tasks (user_id, created_at DESC);

CREATE TABLE task_events (
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    id          INTEGER NOT NULL,       -- 1, 2, 3… within the task: the SSE event id
    event       JSONB NOT NULL,
    PRIMARY KEY (task_id, id)
);

-- The demo dataset the analytics workflow queries: a small shop, two years of orders
-- ending this month. Deterministic contents (dates follow the day the migration ran).
CREATE SCHEMA demo;
CREATE TABLE demo.customers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    signed_up   DATE NOT NULL
);
CREATE TABLE demo.products (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    category    TEXT NOT NULL,
    price       NUMERIC(10, 2) NOT NULL
);
CREATE TABLE demo.orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES demo.customers(id),
    product_id  INTEGER NOT NULL REFERENCES demo.products(id),
    ordered_at  DATE NOT NULL,
    quantity    INTEGER NOT NULL,
    revenue     NUMERIC(12, 2) NOT NULL
);
COMMENT ON TABLE demo.orders IS 'One row per order line; revenue = quantity * product price.';

INSERT INTO demo.products (id, name, category, price)
SELECT i, (ARRAY['Teapot', 'Kettle', 'Mug', 'Grinder', 'Scale', 'Filter', 'Tin', 'Whisk'])[i],
       (ARRAY['brewing', 'brewing', 'tableware', 'brewing', 'tools', 'supplies', 'supplies', 'tools'])[i],
       (ARRAY[34.00, 59.00, 12.50, 89.00, 25.00, 6.00, 9.50, 14.00])[i]
FROM generate_series(1, 8) AS i;

INSERT INTO demo.customers (id, name, region, signed_up)
SELECT i, 'Customer ' || i, (ARRAY['north', 'south', 'east', 'west'])[1 + i % 4],
       (date_trunc('month', now()) - interval '24 months')::date + (i * 7) % 700
FROM generate_series(1, 200) AS i;

INSERT INTO demo.orders (id, customer_id, product_id, ordered_at, quantity, revenue)
SELECT i, 1 + (i * 37) % 200, 1 + (i * 13) % 8, day, q, q * p.price
FROM (
    SELECT i,
           -- more orders in later months: the shop grows
           (date_trunc('month', now()) - interval '23 months')::date
             + floor(sqrt(i::float8 / 6000) * (current_date - (date_trunc('month', now()) - interval '23 months')::date))::int
             AS day,
           1 + (i * 7) % 4 AS q
    FROM generate_series(1, 6000) AS i
) o
JOIN demo.products p ON p.id = 1 + (o.i * 13) % 8;

-- The role analytics queries run under: it can read the demo schema and nothing else.
DO $$
BEGIN
    CREATE ROLE greenroom_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    ALTER ROLE greenroom_reader SET search_path = demo;
    ALTER ROLE greenroom_reader SET statement_timeout = '5s';
    ALTER ROLE greenroom_reader SET default_transaction_read_only = on;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- roles are cluster-wide: another database made it already
END
$$;
REVOKE ALL ON SCHEMA public FROM greenroom_reader;
GRANT USAGE ON SCHEMA demo TO greenroom_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA demo TO greenroom_reader;
