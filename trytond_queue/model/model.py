"""Model: the base of every class registered in the pool."""
import functools

from ..exceptions import ModelError
from .fields import Field

__all__ = ['Model', 'ModelMeta', 'dualmethod']


class ModelMeta(type):
    """Give the class the model name written as ``__name__`` in its body.

    Model code reads ``cls.__name__`` to know its model, as in Tryton.
    """

    def __new__(mcs, name, bases, namespace):
        cls = super().__new__(mcs, name, bases, namespace)
        model_name = namespace.get('__name__')
        if isinstance(model_name, str):
            cls.__name__ = model_name
        return cls


class dualmethod:  # noqa: N801 -- a decorator, named like classmethod
    """Make a class method that also works on an instance.

    ``Model.save(records)`` and ``record.save()`` call the same code,
    the instance being passed as a list of one.
    """

    def __init__(self, function):
        self.function = function
        functools.update_wrapper(self, function)

    def __get__(self, instance, owner):
        if instance is None:
            return functools.partial(self.function, owner)
        return functools.partial(self.function, type(instance), [instance])


class _QueueDescriptor:
    """``cls.__queue__.method(records, ...)`` queues a call of method."""

    caller = None

    def __get__(self, instance, owner):
        if self.caller is None:
            # The queue is built on the framework, not the reverse: it is
            # imported only when a model first queues a call.
            from ..queue.enqueue import QueueCaller
            type(self).caller = QueueCaller
        return self.caller(owner, instance)


class Model(metaclass=ModelMeta):
    """A model: records known by their id, with fields and methods."""

    __queue__ = _QueueDescriptor()
    _fields: dict[str, Field] = {}

    def __init__(self, id: int | None = None, **values):
        if id is not None:
            id = int(id)
        self.id = id
        self._values = {}
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def __setup__(cls):
        """Set up the class once the pool has composed it."""
        fields = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Field):
                    fields[name] = value
        cls._fields = fields

    @classmethod
    def __post_setup__(cls):
        """Finish the setup once every class of the pool is set up."""

    def __repr__(self):
        return f'Pool().get({self.__name__!r})({self.id!r})'

    def __eq__(self, other):
        if not isinstance(other, Model):
            return NotImplemented
        if self.id is None or other.id is None:
            return self is other
        return (self.__name__, self.id) == (other.__name__, other.id)

    def __hash__(self):
        if self.id is None:
            return id(self)
        return hash((self.__name__, self.id))

    def __int__(self):
        return self.id

    def __lt__(self, other):
        if not isinstance(other, Model) or self.__name__ != other.__name__:
            return NotImplemented
        return (self.id or 0) < (other.id or 0)

    def _get_value(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f'{self!r} has no value for {name!r}') from None

    @classmethod
    def check_method(cls, method_name: str):
        """Raise ModelError unless method_name is a public method."""
        if (not isinstance(method_name, str)
                or not method_name.isidentifier()
                or method_name.startswith('_')):
            raise ModelError(
                f'{method_name!r} is not a public method name of '
                f'{cls.__name__!r}: names starting with "_" are private.')
        method = getattr(cls, method_name, None)
        if not callable(method):
            raise ModelError(
                f'The model {cls.__name__!r} has no method '
                f'{method_name!r}.')
        return method
