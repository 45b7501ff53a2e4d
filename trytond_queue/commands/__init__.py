"""The command lines: ``trytond-queue`` and ``trytond-worker``."""
