"""The exceptions of trytond_queue, all below :class:`TrytondQueueError`.

The docstring of each class is its default message, so that raising the
class without arguments still tells the user what went wrong.
"""


class TrytondQueueError(Exception):
    """An error occurred in trytond_queue."""

    def __init__(self, message: str | None = None, *args):
        super().__init__(message or self.__doc__, *args)

    @property
    def message(self) -> str:
        """The human readable message of the error."""
        return str(self.args[0])


class ConfigError(TrytondQueueError):
    """The configuration is not valid: check the file and the environment."""


class DatabaseNotFound(TrytondQueueError):
    """The database does not exist: create it or fix its name."""


class DatabaseNotInitialised(TrytondQueueError):
    """The database is not initialised: run "trytond-queue init -d NAME"."""


class ModelError(TrytondQueueError):
    """A model or its usage is not valid."""


class DomainError(ModelError):
    """The search domain is not valid."""


class UserError(TrytondQueueError):
    """A business rule refused the operation.

    A task that raises it fails at once, without further attempts,
    because running it again would meet the same rule.
    """


class UserWarning(UserError):  # noqa: A001 -- Tryton's name, kept on purpose
    """A business rule warns against the operation."""


class QueueError(TrytondQueueError):
    """A task could not be queued."""


class ArgumentEncodingError(QueueError, TypeError):
    """A task argument cannot be stored as JSON."""


class TaskTimeout(TrytondQueueError):
    """The task ran longer than its timeout allows."""


class TaskCancelled(TrytondQueueError):
    """The task was cancelled while it was running."""


class TasksTakenOver(TrytondQueueError):
    """Tasks of the batch were given to another worker while they ran.

    It happens only if the worker's lock was lost (its control
    connection cut) while it ran them; the batch rolls back so that no
    task's work commits twice.
    """
