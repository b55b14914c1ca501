"""Alembic migrations of the portal schema; ``ztctl.portal.db`` runs them."""
