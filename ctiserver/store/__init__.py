"""Storage: asyncpg pool, migrations, embedded PostgreSQL and the append-only event log."""
