-- 0005: interactions written by the ACD and the agent desktop.
--
-- The ACD names a call by its own text id (the caller channel's Asterisk
-- Uniqueid, e.g. '1732368000.42'), not by a calls row: call_key holds it,
-- unique so that a wrap-up submitted twice (a retry, a second click) updates
-- the one interaction instead of adding another (INSERT ... ON CONFLICT
-- (call_key)). A plain UNIQUE constraint already lets any number of rows
-- have no key (NULLs are distinct), and ON CONFLICT can name it directly.
--
-- The ACD may run from a TOML file with no queues/agents rows, so the queue
-- name and the agent login are kept as text too; queue_id/agent_id are set
-- only when the rows exist.

ALTER TABLE interactions
    ADD COLUMN call_key     text CONSTRAINT interactions_call_key UNIQUE CHECK (call_key <> ''),
    ADD COLUMN queue_name   text CHECK (queue_name <> ''),
    ADD COLUMN agent_login  text CHECK (agent_login <> ''),
    ADD COLUMN wrap_up_at   timestamptz,
    ADD COLUMN follow_up_at timestamptz;

COMMENT ON COLUMN interactions.call_key IS
    'The ACD''s id of the call (caller channel Uniqueid); one interaction per call.';
COMMENT ON COLUMN interactions.queue_name IS
    'The queue''s name as the ACD knows it (queue_id is set too when a queues row exists).';
COMMENT ON COLUMN interactions.agent_login IS
    'The agent''s login as the ACD knows it (agent_id is set too when an agents row exists).';
COMMENT ON COLUMN interactions.wrap_up_at IS 'When the agent submitted the wrap-up.';
COMMENT ON COLUMN interactions.follow_up_at IS
    'When the agent promised to get back to the customer, if they did.';

-- Rows written before this migration: their names from the rows they refer to.
UPDATE interactions i SET queue_name = q.name FROM queues q WHERE q.id = i.queue_id;
UPDATE interactions i SET agent_login = a.login FROM agents a WHERE a.id = i.agent_id;

CREATE INDEX interactions_agent_login ON interactions (agent_login, started_at)
    WHERE agent_login IS NOT NULL;
