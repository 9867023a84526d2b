"""SQLAlchemy models, repositories and Alembic migrations (SQLite and PostgreSQL)."""
