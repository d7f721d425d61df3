-- imagegate shared mode on PostgreSQL: keys, ledger, budgets, circuit holds, experiments.
-- Money is BIGINT micro-USD; times are seconds since the epoch (double precision), as the
-- embedded SQLite ledger keeps them. Applied by proxy.stores.pg_schema.migrate.

CREATE TABLE api_keys (
  name text PRIMARY KEY,
  team text,
  key_hash text NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE,  -- sha256 hex, never the secret
  created double precision NOT NULL,
  revoked double precision,
  budget_micros bigint,
  budget_window text,
  requests_per_minute integer,
  images_per_minute integer,
  models jsonb,
  source text NOT NULL
);

-- One row per budget (scope, name) and window (win, start): what its settled rows spent and
-- what open reservations hold. A reservation is one conditional UPDATE per row. COLLATE "C":
-- every writer locks these rows in one order (code points, as Python sorts), so two
-- transactions never wait on each other in a cycle.
CREATE TABLE budget_usage (
  scope text COLLATE "C" NOT NULL,
  name text COLLATE "C" NOT NULL,
  win text COLLATE "C" NOT NULL,
  start bigint NOT NULL,
  spent bigint NOT NULL DEFAULT 0,
  reserved bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (scope, name, win, start)
);

CREATE TABLE reservations (
  id text PRIMARY KEY,
  owner text NOT NULL,
  created double precision NOT NULL,
  amount_micros bigint NOT NULL,
  holds jsonb NOT NULL,  -- [[scope, name, win, start], ...]: the budget_usage rows it holds
  draft jsonb            -- the LedgerRow it is settled as should its owner die
);
CREATE INDEX reservations_owner ON reservations (owner);

-- Every replica's last heartbeat (Ledger.resolve_orphans).
CREATE TABLE replicas (owner text PRIMARY KEY, seen double precision NOT NULL);

CREATE TABLE ledger (
  id bigserial PRIMARY KEY,
  ts double precision NOT NULL,
  key_name text,
  team text,
  request_key text,
  model text,
  provider text,
  images integer NOT NULL,
  cost_micros bigint NOT NULL,
  saved_micros bigint NOT NULL,
  cache text,
  request_id text,
  requests integer NOT NULL DEFAULT 1,
  over_quote_micros bigint NOT NULL DEFAULT 0,
  refunded_micros bigint NOT NULL DEFAULT 0,
  reservation text UNIQUE
);
CREATE INDEX ledger_ts ON ledger (ts);
CREATE INDEX ledger_key_ts ON ledger (key_name, ts);
CREATE INDEX ledger_team_ts ON ledger (team, ts);
CREATE INDEX ledger_over_quote ON ledger (provider, model) WHERE over_quote_micros > 0;
CREATE INDEX ledger_orphaned ON ledger (ts) WHERE cache = 'ORPHANED';

CREATE TABLE circuit_holds (
  model text PRIMARY KEY,
  reason text NOT NULL,
  since double precision NOT NULL
);

CREATE TABLE experiments (
  name text PRIMARY KEY,
  created double precision NOT NULL,
  variants jsonb NOT NULL
);
CREATE TABLE experiment_images (
  sha256 text PRIMARY KEY,
  format text NOT NULL,
  data bytea NOT NULL
);
CREATE TABLE experiment_impressions (
  experiment text NOT NULL,
  subject text NOT NULL,
  variant text NOT NULL,
  ts double precision NOT NULL,
  PRIMARY KEY (experiment, subject)
);
CREATE TABLE experiment_conversions (
  experiment text NOT NULL,
  subject text NOT NULL,
  variant text NOT NULL,
  ts double precision NOT NULL,
  PRIMARY KEY (experiment, subject)
);
