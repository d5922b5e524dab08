-- 0004: accounts of the people who sign in (agents, supervisors, admins)
-- and their browser sessions.
--
-- Written by ctiserver.store.accounts; `ctiserver user ...` manages accounts,
-- the sign-in page creates sessions. Passwords are argon2id hashes
-- (ctiserver.auth.passwords); sessions are found by the sha256 of their
-- token, so the database never holds a usable cookie.

CREATE TABLE accounts (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login         text        NOT NULL UNIQUE CHECK (login <> ''),
    name          text        NOT NULL DEFAULT '',
    role          text        NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    password_hash text        NOT NULL CHECK (password_hash <> ''),
    agent_login   text        CHECK (agent_login <> ''),
    active        boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- An agent account exists to take calls: it must say as which ACD agent.
    CHECK (role <> 'agent' OR agent_login IS NOT NULL)
);
COMMENT ON TABLE accounts IS
    'People who sign in to the desktop, the wallboard or the administration: agents, supervisors, admins. Each role may do what the roles before it may.';
COMMENT ON COLUMN accounts.password_hash IS 'argon2id hash in PHC form ($argon2id$v=19$m=...); rehashed at sign-in when the parameters change.';
COMMENT ON COLUMN accounts.agent_login IS 'The ACD agent id (agents.login, the id of [[agents]] in the ACD file) this account takes calls as; NULL for accounts that take none.';
COMMENT ON COLUMN accounts.active IS 'false: may not sign in; kept so the history still names who did what.';
-- Not a foreign key: the ACD configuration may live in a file rather than in agents.
CREATE INDEX accounts_agent_login ON accounts (agent_login) WHERE agent_login IS NOT NULL;
CREATE TRIGGER accounts_updated_at BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE sessions (
    token_hash   bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    account_id   bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    CHECK (expires_at > created_at),
    CHECK (last_seen_at >= created_at)
);
COMMENT ON TABLE sessions IS
    'Signed-in browsers. The cookie holds a random 32-byte token; only its sha256 is stored. A session ends at expires_at, which moves forward (sliding expiry) as it is used.';
COMMENT ON COLUMN sessions.token_hash IS 'sha256 of the session token the cookie carries.';
COMMENT ON COLUMN sessions.last_seen_at IS 'Last request with this session, recorded at most once a minute.';
CREATE INDEX sessions_account ON sessions (account_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
