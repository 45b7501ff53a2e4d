"""Search domains turned into python-sql conditions.

A domain is a list of clauses ``(field, operator, value)`` and of nested
domains, joined by AND unless the list starts with ``'OR'``.  As in
Tryton, ``None`` stands for NULL: ``('f', '=', None)`` selects the rows
where f is NULL and ``('f', 'in', [1, None])`` those where it is 1 or
NULL; a Boolean NULL counts as False.
"""
import operator as python_operator

from sql import Literal
from sql import operators as sql_operators

from ..exceptions import DomainError

__all__ = ['domain_to_condition', 'OPERATORS']

OPERATORS = {
    '=': sql_operators.Equal,
    '!=': sql_operators.NotEqual,
    '<': sql_operators.Less,
    '<=': sql_operators.LessEqual,
    '>': sql_operators.Greater,
    '>=': sql_operators.GreaterEqual,
    'in': sql_operators.In,
    'not in': sql_operators.NotIn,
    'like': sql_operators.Like,
    'ilike': sql_operators.ILike,
}
# What each operator means in Python, to tell whether the value that a
# NULL column stands for matches the clause.
PYTHON_OPERATORS = {
    '=': python_operator.eq,
    '!=': python_operator.ne,
    '<': python_operator.lt,
    '<=': python_operator.le,
    '>': python_operator.gt,
    '>=': python_operator.ge,
    'in': lambda a, b: a in b,
    'not in': lambda a, b: a not in b,
}
JOINS = {'AND': sql_operators.And, 'OR': sql_operators.Or}
# Both backends then read a backslash as the escape of % and _: it is
# PostgreSQL's default and SQLite has none.
LIKE_ESCAPE = '\\'


def domain_to_condition(model, table, domain):
    """Return the condition on table that selects the domain's records."""
    if not isinstance(domain, (list, tuple)):
        raise DomainError(
            f'A domain is a list of clauses, not {domain!r:.60}.')
    if _is_clause(domain):
        return _clause_to_condition(model, table, domain)
    join = sql_operators.And
    if domain and isinstance(domain[0], str):
        if domain[0] not in JOINS:
            raise DomainError(
                f'The clause {tuple(domain)!r:.80} is not '
                '(field, operator, value).')
        join, domain = JOINS[domain[0]], domain[1:]
    conditions = []
    for item in domain:
        if isinstance(item, str) and item in JOINS:
            raise DomainError(
                f'{item!r} must be the first item of its list, not '
                'follow a clause.')
        conditions.append(domain_to_condition(model, table, item))
    if not conditions:
        return Literal(join is sql_operators.And)
    if len(conditions) == 1:
        return conditions[0]
    return join(conditions)


def _is_clause(domain):
    return (len(domain) == 3 and isinstance(domain[0], str)
        and domain[0] not in JOINS
        and isinstance(domain[1], str))


def _clause_to_condition(model, table, clause):
    name, operator, value = clause
    if operator not in OPERATORS:
        raise DomainError(
            f'The operator {operator!r} of {tuple(clause)!r} is unknown: '
            f'use one of {", ".join(OPERATORS)}.')
    if name == 'id':
        column, format_, null_value = table.id, _format_id, None
    else:
        field = model._fields.get(name)
        if field is None:
            raise DomainError(
                f'The model {model.__name__!r} has no field {name!r} '
                f'(in {tuple(clause)!r}).')
        column, format_ = field.sql_column(table), field.sql_format
        null_value = field.null_value
    if operator in ('in', 'not in'):
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise DomainError(
                f'The operator {operator!r} takes a list, not '
                f'{value!r:.60}.')
        value = [null_value if v is None else v for v in value]
        condition = _in_condition(column, operator, value, format_)
    elif value is None and null_value is None:
        if operator == '=':
            return column == None  # noqa: E711 -- renders IS NULL
        if operator == '!=':
            return column != None  # noqa: E711 -- renders IS NOT NULL
        raise DomainError(
            f'None can be compared with = and != only, not in '
            f'{tuple(clause)!r}.')
    elif operator in ('like', 'ilike'):
        if not isinstance(value, str):
            raise DomainError(
                f'The operator {operator!r} takes a string, not '
                f'{value!r:.60}.')
        return OPERATORS[operator](column, value, escape=LIKE_ESCAPE)
    else:
        if value is None:
            value = null_value
        condition = OPERATORS[operator](column, format_(value))
    # SQL never matches NULL with a comparison.  When NULL stands for a
    # value (False for a Boolean), the NULL rows are added if that value
    # matches; else only when None is asked for, as in Tryton.
    if null_value is None:
        matches_null = operator == 'in' and None in value
    else:
        matches_null = PYTHON_OPERATORS[operator](null_value, value)
    if matches_null:
        condition |= column == None  # noqa: E711 -- renders IS NULL
    return condition


def _in_condition(column, operator, values, format_):
    present = [format_(v) for v in values if v is not None]
    if operator == 'in':
        condition = column.in_(present) if present else Literal(False)
    else:
        condition = ~column.in_(present) if present else Literal(True)
        if None in values:
            condition &= column != None  # noqa: E711 -- IS NOT NULL
    return condition


def _format_id(value):
    if hasattr(value, 'id'):
        return value.id
    return value
