"""A PostgreSQL-backed task queue in a small Tryton-style framework."""

__version__ = '0.1.0'
