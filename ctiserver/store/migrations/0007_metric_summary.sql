-- 0007: per-stay summary rows for historical metrics (ctiserver/metrics/summary.py).
--
-- One row per finished queue stay, holding the additive inputs of the queue
-- figures (figures.QueueTotals) as raw instants and durations, so the variant
-- settings (service-level threshold, short abandons, callback wait, FCR window
-- and scope) become expressions and FILTER clauses of one SQL aggregation.
-- Instants are POSIX seconds (double precision), as in the fold, so the SQL
-- sums equal the fold's float arithmetic. Written by `ctiserver metrics
-- rebuild` from the same fold the event path uses; rebuilt, never edited.

CREATE TABLE metric_stays (
    call_id               text             NOT NULL,
    queue                 text             NOT NULL,
    entered_at            double precision NOT NULL,
    first_entered_at      double precision NOT NULL,
    left_at               double precision,
    outcome               text             NOT NULL,
    answered_at           double precision,
    agent_id              text,
    callback_requested_at double precision,
    transferred           boolean          NOT NULL DEFAULT false,
    skills                text[]           NOT NULL DEFAULT '{}',
    customer_key          text,
    handled               integer          NOT NULL DEFAULT 0,
    handle_s              double precision NOT NULL DEFAULT 0,
    talk_s                double precision NOT NULL DEFAULT 0,
    hold_s                double precision NOT NULL DEFAULT 0,
    acw_s                 double precision NOT NULL DEFAULT 0,
    resolved              boolean,
    -- The next other call of the same customer entering the same queue / any queue
    -- after this stay's answer, as known up to fcr_known_until.
    next_same_queue_at    double precision,
    next_any_at           double precision,
    fcr_known_until       double precision NOT NULL,
    PRIMARY KEY (call_id, entered_at, queue)
);

CREATE INDEX metric_stays_entered ON metric_stays (entered_at);

COMMENT ON TABLE metric_stays IS
    'One row per finished queue stay: the additive inputs of the queue figures (summary.py).';

-- Agent state time cut at 15-minute edges (UTC-aligned; every real time zone''s
-- offset is a multiple of 15 minutes, so these are also local 15-minute edges).
CREATE TABLE metric_agent_time (
    agent_id      text             NOT NULL,
    bucket_start  double precision NOT NULL,
    state         text             NOT NULL,
    reason        text             NOT NULL DEFAULT '',
    seconds       double precision NOT NULL,
    PRIMARY KEY (agent_id, bucket_start, state, reason)
);

CREATE INDEX metric_agent_time_bucket ON metric_agent_time (bucket_start);

COMMENT ON TABLE metric_agent_time IS
    'Agents'' finished state time per 15-minute bucket, state and not-ready reason (summary.py).';

-- Which ranges the summary rows cover: [range_start, range_end) rebuilt from the
-- event log as it stood at built_as_of; unfinished: stays of the range that were not
-- finished then (no row: a report of the range must come from the events).
CREATE TABLE metric_summary_ranges (
    range_start  double precision NOT NULL,
    range_end    double precision NOT NULL,
    built_as_of  double precision NOT NULL,
    unfinished   integer          NOT NULL DEFAULT 0,
    -- The variants metric_queue_intervals' totals were built with (rollup.settings_key).
    rollup_key   text,
    built_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (range_start, range_end)
);

COMMENT ON TABLE metric_summary_ranges IS
    'Ranges whose metric_stays and metric_agent_time rows were rebuilt, and as of when.';

-- Queue totals per 15-minute bucket (UTC edges) of the stays above, aggregated by
-- the same SQL as a report (rollup.py): every column is additive (longest_wait_s
-- a maximum), so a report of local days or a month sums a few thousand rows.
-- last_fcr_due: when the bucket's last FCR window closes (the repeat-contact
-- counts are as of built_as_of, so they answer only once it is past).
CREATE TABLE metric_queue_intervals (
    bucket_start          double precision NOT NULL,
    queue                 text             NOT NULL,
    settings_key          text             NOT NULL,
    last_fcr_due          double precision,
    entered               integer          NOT NULL,
    offered               integer          NOT NULL,
    answered              integer          NOT NULL,
    abandoned             integer          NOT NULL,
    short_abandoned       integer          NOT NULL,
    routed_away           integer          NOT NULL,
    overflowed            integer          NOT NULL,
    voicemail             integer          NOT NULL,
    closed                integer          NOT NULL,
    callbacks             integer          NOT NULL,
    waiting               integer          NOT NULL,
    sl_undetermined       integer          NOT NULL,
    answered_within_t     integer          NOT NULL,
    abandoned_after_t     integer          NOT NULL,
    wait_answered_s       double precision NOT NULL,
    wait_abandoned_s      double precision NOT NULL,
    longest_wait_s        double precision NOT NULL,
    transferred           integer          NOT NULL,
    handled               integer          NOT NULL,
    handle_s              double precision NOT NULL,
    talk_s                double precision NOT NULL,
    hold_s                double precision NOT NULL,
    acw_s                 double precision NOT NULL,
    fcr_reported          integer          NOT NULL,
    fcr_reported_resolved integer          NOT NULL,
    fcr_repeat_closed     integer          NOT NULL,
    fcr_repeat_resolved   integer          NOT NULL,
    fcr_repeat_pending    integer          NOT NULL,
    fcr_repeat_anonymous  integer          NOT NULL,
    ivr_entered           integer          NOT NULL,
    ivr_contained         integer          NOT NULL,
    ivr_open              integer          NOT NULL,
    PRIMARY KEY (bucket_start, queue)
);

COMMENT ON TABLE metric_queue_intervals IS
    'Queue totals (figures.QueueTotals) per 15-minute bucket, summed by reports (rollup.py).';
