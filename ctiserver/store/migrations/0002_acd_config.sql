-- 0002: what the ACD configuration needs beyond 0001: the queues each agent
-- serves, in offer order; the priority of each customer grade; and queues
-- retired from the configuration.
--
-- Written by ctiserver.acd.config_store (`ctiserver acd import`), read back
-- through the same validation as the configuration file.

-- Queues, like agents, are retired rather than deleted: calls and
-- interactions refer to them.
ALTER TABLE queues ADD COLUMN active boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN queues.active IS
    'false: removed from the ACD configuration, kept because calls and interactions refer to it.';

CREATE TABLE agent_queues (
    agent_id bigint  NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    queue_id bigint  NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    rank     integer NOT NULL CHECK (rank >= 0),
    PRIMARY KEY (agent_id, queue_id),
    UNIQUE (agent_id, rank)
);
COMMENT ON TABLE agent_queues IS
    'The queues each agent serves; the ACD offers an agent calls of rank 0 first, then 1, ...';
CREATE INDEX agent_queues_queue ON agent_queues (queue_id);

CREATE TABLE customer_grades (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grade      text        NOT NULL UNIQUE CHECK (grade <> ''),
    priority   integer     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customer_grades IS
    'Customer grades (customers.grade) and the priority the ACD adds to their calls; higher is answered first.';
CREATE TRIGGER customer_grades_updated_at BEFORE UPDATE ON customer_grades
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
