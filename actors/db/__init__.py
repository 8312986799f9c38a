"""PostgreSQL through asyncpg: the embedded server by default, DATABASE_URL for a real one."""
