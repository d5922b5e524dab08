-- 0006: one interaction per call and agent.
--
-- A transferred call is handled by two agents (or more), and each of them
-- submits a wrap-up of their own part of it. With call_key unique (0005) the
-- second wrap-up overwrote the first. The key is now the call and the agent
-- who handled it: submitting the same wrap-up again still updates that one
-- row (INSERT ... ON CONFLICT on this index), and each agent of a transferred
-- call keeps their own disposition and notes.
--
-- agent_login may be NULL (an interaction written without an agent, e.g. by
-- the REST API): coalesce(agent_login, '') makes such rows one per call_key
-- as before (agent_login refuses '' itself, so '' stands for "no agent").
-- Rows without a call_key stay unconstrained (NULLs are distinct).

ALTER TABLE interactions DROP CONSTRAINT interactions_call_key;

CREATE UNIQUE INDEX interactions_call_key_agent
    ON interactions (call_key, (coalesce(agent_login, '')));

COMMENT ON COLUMN interactions.call_key IS
    'The ACD''s id of the call (caller channel Uniqueid); one interaction per call and agent.';
