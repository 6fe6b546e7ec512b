"""Alembic migrations of the zoo registry (installed as ``zoo_migrations``)."""
