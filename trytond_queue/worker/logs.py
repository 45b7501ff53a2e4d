"""Logging of the worker command: the command, not the library, sets it."""
import logging
import logging.config

__all__ = ['setup']

FORMAT = '%(asctime)s %(process)d %(levelname)s %(name)s %(message)s'


def setup(verbose=0, logconf=None):
    """Configure logging from a file, or by verbosity on standard error."""
    if logconf:
        logging.config.fileConfig(logconf, disable_existing_loggers=False)
        return
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format=FORMAT)
