-- 0001: customers and their phones and accounts, agents, skills, queues,
-- calls and their legs, interactions (contact history) and the event log.
--
-- Conventions: bigint identity keys; timestamptz for every instant;
-- created_at/updated_at kept by the database; closed vocabularies are CHECKs
-- (widen them in a later migration); jsonb columns hold objects only.

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION set_updated_at() IS 'Trigger: stamps updated_at on every UPDATE.';

-- Channels a contact can come through, shared by customers and interactions.
CREATE DOMAIN contact_channel AS text
    CHECK (VALUE IN ('phone', 'callback', 'email', 'sms', 'chat', 'web', 'social', 'video'));
COMMENT ON DOMAIN contact_channel IS 'A contact channel: phone, callback, email, sms, chat, web, social, video.';

------------------------------------------------------------------------------
-- Agents, skills, queues
------------------------------------------------------------------------------

CREATE TABLE agents (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login       text        NOT NULL UNIQUE CHECK (login <> ''),
    name        text        NOT NULL DEFAULT '',
    extension   text,
    attributes  jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    active      boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE agents IS
    'People who take calls. login is the stable id used in the event log; attributes hold routing attributes (language, team).';
COMMENT ON COLUMN agents.extension IS 'The agent''s phone: an Asterisk endpoint such as PJSIP/1001.';
CREATE TRIGGER agents_updated_at BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE skills (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (name <> ''),
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE skills IS 'Skills that routing matches calls against (a language, a product, a service tier).';

CREATE TABLE agent_skills (
    agent_id    bigint   NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    skill_id    bigint   NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
    proficiency smallint NOT NULL CHECK (proficiency BETWEEN 1 AND 10),
    PRIMARY KEY (agent_id, skill_id)
);
CREATE INDEX agent_skills_skill ON agent_skills (skill_id, proficiency);
COMMENT ON TABLE agent_skills IS 'Which agent has which skill, with proficiency 1 (novice) to 10 (expert).';

CREATE TABLE queues (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (name <> ''),
    description text        NOT NULL DEFAULT '',
    settings    jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE queues IS
    'ACD queues. name is the stable id used in the event log; settings hold routing steps, policies and thresholds as the ACD defines them.';
CREATE TRIGGER queues_updated_at BEFORE UPDATE ON queues
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

------------------------------------------------------------------------------
-- Customers
------------------------------------------------------------------------------

CREATE TABLE customers (
    id                 bigint          GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text            NOT NULL CHECK (name <> ''),
    grade              text            NOT NULL DEFAULT 'standard' CHECK (grade <> ''),
    value              numeric(16, 2),
    churn_risk         numeric(4, 3)   CHECK (churn_risk BETWEEN 0 AND 1),
    language           text,
    preferred_channel  contact_channel,
    account_manager_id bigint          REFERENCES agents (id) ON DELETE SET NULL,
    notes              text            NOT NULL DEFAULT '',
    created_at         timestamptz     NOT NULL DEFAULT now(),
    updated_at         timestamptz     NOT NULL DEFAULT now()
);
COMMENT ON TABLE customers IS
    'People and firms who contact the centre, with the grade that drives their priority and service.';
COMMENT ON COLUMN customers.grade IS 'Service grade/tier (e.g. vip, gold, standard); routing maps it to a priority.';
COMMENT ON COLUMN customers.value IS 'Value to the business (revenue or profit contribution) in the centre''s currency.';
COMMENT ON COLUMN customers.churn_risk IS 'Predicted probability (0..1) that the customer leaves.';
COMMENT ON COLUMN customers.language IS 'Preferred language as a BCP 47 tag, e.g. zh-CN, yue, en.';
COMMENT ON COLUMN customers.account_manager_id IS 'The named account manager, for graded customers who have one.';
CREATE INDEX customers_grade ON customers (grade);
CREATE INDEX customers_account_manager ON customers (account_manager_id)
    WHERE account_manager_id IS NOT NULL;
CREATE TRIGGER customers_updated_at BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE customer_phones (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint      NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    number      text        NOT NULL,
    digits      text        NOT NULL CHECK (digits ~ '^[0-9]{2,20}$'),
    -- Caller ids arrive as +86..., 0086..., 0... or bare national numbers:
    -- the last ten digits match across those forms (see customers.py).
    match_key   text        GENERATED ALWAYS AS (right(digits, 10)) STORED,
    label       text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, digits)
);
COMMENT ON TABLE customer_phones IS
    'A customer''s phone numbers; one number may belong to several customers (a shared home line).';
COMMENT ON COLUMN customer_phones.number IS 'The number as entered, for display.';
COMMENT ON COLUMN customer_phones.digits IS 'The number''s digits only, international prefix (+ or 00) removed.';
COMMENT ON COLUMN customer_phones.match_key IS 'Last ten digits: the caller-id lookup key.';
CREATE INDEX customer_phones_match_key ON customer_phones (match_key);

CREATE TABLE customer_accounts (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id    bigint      NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    account_number text        NOT NULL UNIQUE CHECK (account_number <> ''),
    kind           text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customer_accounts IS
    'Account, contract or card numbers a caller can identify with in the IVR; each belongs to one customer.';
CREATE INDEX customer_accounts_customer ON customer_accounts (customer_id);

------------------------------------------------------------------------------
-- Calls
------------------------------------------------------------------------------

CREATE TABLE calls (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asterisk_node text        NOT NULL DEFAULT '',
    linkedid      text        NOT NULL CHECK (linkedid <> ''),
    uniqueid      text        NOT NULL CHECK (uniqueid <> ''),
    direction     text        NOT NULL DEFAULT 'inbound'
                              CHECK (direction IN ('inbound', 'outbound', 'internal')),
    caller_number text,
    caller_name   text,
    dnis          text,
    customer_id   bigint      REFERENCES customers (id) ON DELETE SET NULL,
    queue_id      bigint      REFERENCES queues (id) ON DELETE SET NULL,
    started_at    timestamptz NOT NULL,
    answered_at   timestamptz,
    ended_at      timestamptz,
    outcome       text        CHECK (outcome IN (
                                  'answered', 'abandoned', 'callback', 'overflowed', 'timed_out',
                                  'voicemail', 'ivr_contained', 'ivr_hangup', 'busy', 'no_answer',
                                  'failed')),
    UNIQUE (asterisk_node, linkedid),
    CHECK (answered_at IS NULL OR answered_at >= started_at),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
COMMENT ON TABLE calls IS
    'One row per call, keyed by Asterisk''s linkedid (per Asterisk node): a summary for history and search. Metrics are computed from events, not from here.';
COMMENT ON COLUMN calls.asterisk_node IS 'The Asterisk system name; uniqueids are only unique per node.';
COMMENT ON COLUMN calls.uniqueid IS 'Uniqueid of the call''s first channel.';
COMMENT ON COLUMN calls.dnis IS 'The number dialled (DNIS).';
COMMENT ON COLUMN calls.queue_id IS 'The last queue the call was in, if any.';
CREATE INDEX calls_started ON calls (started_at);
CREATE INDEX calls_customer ON calls (customer_id, started_at) WHERE customer_id IS NOT NULL;
CREATE INDEX calls_caller_number ON calls (caller_number, started_at) WHERE caller_number IS NOT NULL;

CREATE TABLE call_legs (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id           bigint      NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    asterisk_node     text        NOT NULL DEFAULT '',
    channel           text        NOT NULL CHECK (channel <> ''),
    uniqueid          text        NOT NULL CHECK (uniqueid <> ''),
    role              text        NOT NULL
                                  CHECK (role IN ('caller', 'agent', 'supervisor', 'external')),
    agent_id          bigint      REFERENCES agents (id) ON DELETE SET NULL,
    started_at        timestamptz NOT NULL,
    answered_at       timestamptz,
    ended_at          timestamptz,
    hangup_cause      smallint,
    hangup_cause_text text,
    UNIQUE (asterisk_node, uniqueid),
    CHECK (answered_at IS NULL OR answered_at >= started_at),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
COMMENT ON TABLE call_legs IS
    'The channels of a call: the caller, each agent leg offered or connected, supervisors listening or barging.';
COMMENT ON COLUMN call_legs.channel IS 'Asterisk channel name, e.g. PJSIP/1001-00000002.';
COMMENT ON COLUMN call_legs.hangup_cause IS 'Q.850 cause code Asterisk reported at hang-up.';
CREATE INDEX call_legs_call ON call_legs (call_id);
CREATE INDEX call_legs_agent ON call_legs (agent_id, started_at) WHERE agent_id IS NOT NULL;

------------------------------------------------------------------------------
-- Interactions: the contact history a screen-pop shows
------------------------------------------------------------------------------

CREATE TABLE interactions (
    id             bigint          GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id    bigint          REFERENCES customers (id) ON DELETE CASCADE,
    call_id        bigint          REFERENCES calls (id) ON DELETE SET NULL,
    channel        contact_channel NOT NULL,
    direction      text            NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    address        text,
    queue_id       bigint          REFERENCES queues (id) ON DELETE SET NULL,
    agent_id       bigint          REFERENCES agents (id) ON DELETE SET NULL,
    disposition    text,
    notes          text            NOT NULL DEFAULT '',
    resolved       boolean,
    recording_path text,
    started_at     timestamptz     NOT NULL,
    ended_at       timestamptz,
    created_at     timestamptz     NOT NULL DEFAULT now(),
    updated_at     timestamptz     NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
COMMENT ON TABLE interactions IS
    'Every contact with a customer (call, callback, e-mail, chat) and how it ended: the history an agent sees at the screen-pop.';
COMMENT ON COLUMN interactions.customer_id IS 'NULL while the contact is not matched to a customer.';
COMMENT ON COLUMN interactions.address IS 'The caller number, e-mail address or handle the contact came from.';
COMMENT ON COLUMN interactions.disposition IS 'The wrap-up code the agent chose.';
COMMENT ON COLUMN interactions.resolved IS 'Agent-reported resolution at wrap-up; NULL before wrap-up.';
CREATE INDEX interactions_customer ON interactions (customer_id, started_at DESC)
    WHERE customer_id IS NOT NULL;
CREATE INDEX interactions_call ON interactions (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX interactions_agent ON interactions (agent_id, started_at) WHERE agent_id IS NOT NULL;
CREATE TRIGGER interactions_updated_at BEFORE UPDATE ON interactions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

------------------------------------------------------------------------------
-- The event log: append-only, the source of every metric
------------------------------------------------------------------------------

CREATE TABLE events (
    id          bigserial   PRIMARY KEY,
    event_key   uuid        NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    type        text        NOT NULL CHECK (type <> ''),
    call_id     text,
    agent_id    text,
    queue_id    text,
    payload     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object')
);
COMMENT ON TABLE events IS
    'Append-only log of every state change (calls, queue entries and exits, agent states, wrap-ups); metrics are computed from it. UPDATE and DELETE are refused.';
COMMENT ON COLUMN events.event_key IS 'Idempotency key set by the writer: a replayed event is stored once.';
COMMENT ON COLUMN events.occurred_at IS 'When it happened. Order by (occurred_at, id): id is write order, which an outage can shift.';
COMMENT ON COLUMN events.recorded_at IS 'When it reached the database.';
COMMENT ON COLUMN events.call_id IS 'The call as the emitter knows it (Asterisk linkedid); text so no row must exist first.';
COMMENT ON COLUMN events.agent_id IS 'The agent''s login.';
COMMENT ON COLUMN events.queue_id IS 'The queue''s name.';
CREATE UNIQUE INDEX events_event_key ON events (event_key);
CREATE INDEX events_occurred ON events (occurred_at);
CREATE INDEX events_call ON events (call_id, occurred_at) WHERE call_id IS NOT NULL;
CREATE INDEX events_agent ON events (agent_id, occurred_at) WHERE agent_id IS NOT NULL;
CREATE INDEX events_queue ON events (queue_id, occurred_at) WHERE queue_id IS NOT NULL;

CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % refused', TG_OP
        USING HINT = 'record a correcting event instead';
END;
$$;
COMMENT ON FUNCTION events_refuse_change() IS 'Trigger: keeps the event log append-only.';
-- Statement level: refused even when no row matches, so a mistake shows at once.
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
