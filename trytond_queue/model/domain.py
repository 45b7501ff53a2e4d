"""Search domains turned into python-sql conditions.

A domain is a list of clauses ``(field, operator, value)`` and of nested
domains, joined by AND unless the list starts with ``'OR'``.
"""
from sql import Literal
from sql.operators import (
    And, Equal, Greater, GreaterEqual, ILike, In, Less, LessEqual, Like,
    NotEqual, NotIn, Or)

from ..exceptions import DomainError

__all__ = ['domain_to_condition', 'OPERATORS']

OPERATORS = {
    '=': Equal,
    '!=': NotEqual,
    '<': Less,
    '<=': LessEqual,
    '>': Greater,
    '>=': GreaterEqual,
    'in': In,
    'not in': NotIn,
    'like': Like,
    'ilike': ILike,
}


def domain_to_condition(model, table, domain):
    """Return the condition on table that selects the domain's records."""
    if not isinstance(domain, (list, tuple)):
        raise DomainError(
            f'A domain is a list of clauses, not {domain!r:.60}.')
    if _is_clause(domain):
        return _clause_to_condition(model, table, domain)
    join = And
    if domain and domain[0] in ('AND', 'OR'):
        join = Or if domain[0] == 'OR' else And
        domain = domain[1:]
    conditions = [
        domain_to_condition(model, table, item) for item in domain]
    if not conditions:
        return Literal(join is And)
    if len(conditions) == 1:
        return conditions[0]
    return join(conditions)


def _is_clause(domain):
    return (len(domain) == 3 and isinstance(domain[0], str)
        and domain[0] not in ('AND', 'OR')
        and isinstance(domain[1], str))


def _clause_to_condition(model, table, clause):
    name, operator, value = clause
    if operator not in OPERATORS:
        raise DomainError(
            f'The operator {operator!r} of {tuple(clause)!r} is unknown: '
            f'use one of {", ".join(OPERATORS)}.')
    if name == 'id':
        column, format_ = table.id, _format_id
    else:
        field = model._fields.get(name)
        if field is None:
            raise DomainError(
                f'The model {model.__name__!r} has no field {name!r} '
                f'(in {tuple(clause)!r}).')
        column, format_ = field.sql_column(table), field.sql_format
    if operator in ('in', 'not in'):
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise DomainError(
                f'The operator {operator!r} takes a list, not '
                f'{value!r:.60}.')
        values = [format_(v) for v in value]
        if not values:
            return Literal(operator == 'not in')
        return OPERATORS[operator](column, values)
    if value is None:
        if operator == '=':
            return column == None  # noqa: E711 -- renders IS NULL
        if operator == '!=':
            return column != None  # noqa: E711 -- renders IS NOT NULL
        raise DomainError(
            f'None can be compared with = and != only, not in '
            f'{tuple(clause)!r}.')
    if operator in ('like', 'ilike') and not isinstance(value, str):
        raise DomainError(
            f'The operator {operator!r} takes a string, not '
            f'{value!r:.60}.')
    return OPERATORS[operator](column, format_(value))


def _format_id(value):
    if hasattr(value, 'id'):
        return value.id
    return value
