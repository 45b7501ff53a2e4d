"""Domains: every operator selects the same rows on both backends."""
import datetime

import pytest

from trytond_queue.exceptions import DomainError, ModelError
from trytond_queue.pool import Pool

ROWS = {
    'A': {'char': 'Apple', 'integer': 1, 'boolean': True,
        'date': datetime.date(2024, 1, 1)},
    'B': {'char': 'apricot', 'integer': 2, 'boolean': False,
        'date': datetime.date(2024, 6, 1)},
    'C': {'char': '50%_off', 'integer': 3,
        'date': datetime.date(2024, 12, 31)},
    'D': {},
    }


@pytest.fixture
def rows(env):
    """Create the rows; return a function from a domain to row labels."""
    with env.transaction():
        Everything = Pool().get('test.everything')
        records = Everything.create(list(ROWS.values()))
    labels = {r.id: label for r, label in zip(records, ROWS)}

    def search(domain):
        with env.transaction(readonly=True):
            Everything = Pool().get('test.everything')
            return ''.join(sorted(
                labels[r.id] for r in Everything.search(domain)))

    search.records = dict(zip(ROWS, records))
    return search


@pytest.mark.parametrize('clause, expected', [
    (('integer', '=', 2), 'B'),
    (('integer', '!=', 2), 'AC'),
    (('integer', '<', 2), 'A'),
    (('integer', '<=', 2), 'AB'),
    (('integer', '>', 2), 'C'),
    (('integer', '>=', 2), 'BC'),
    (('integer', 'in', [1, 3]), 'AC'),
    (('integer', 'in', (3,)), 'C'),
    (('integer', 'not in', [1, 3]), 'B'),
    (('integer', 'in', []), ''),
    (('integer', 'not in', []), 'ABCD'),
    (('integer', '=', None), 'D'),
    (('integer', '!=', None), 'ABC'),
    (('integer', 'in', [1, None]), 'AD'),
    (('integer', 'in', [None]), 'D'),
    (('integer', 'not in', [1, None]), 'BC'),
    (('char', '=', 'Apple'), 'A'),
    (('char', 'like', 'Ap%'), 'A'),
    (('char', 'like', 'ap%'), 'B'),
    (('char', 'like', '_pple'), 'A'),
    (('char', 'ilike', 'AP%'), 'AB'),
    (('char', 'ilike', '%O%'), 'BC'),
    (('char', 'like', '50\\%\\_off'), 'C'),
    (('char', 'like', '5_\\%%'), 'C'),
    (('char', 'like', 'Appl\\_'), ''),
    (('date', '>=', datetime.date(2024, 6, 1)), 'BC'),
    (('date', '<', datetime.date(2024, 6, 1)), 'A'),
    (('boolean', '=', True), 'A'),
    (('boolean', '=', False), 'BCD'),
    (('boolean', '=', None), 'BCD'),
    (('boolean', '!=', True), 'BCD'),
    (('boolean', '!=', False), 'A'),
    (('boolean', '!=', None), 'A'),
    (('boolean', 'in', [False]), 'BCD'),
    (('boolean', 'in', [True, None]), 'ABCD'),
    (('boolean', 'not in', [False]), 'A'),
    (('boolean', 'not in', [True]), 'BCD'),
    ], ids=repr)
def test_operator_selects_the_rows(rows, clause, expected):
    assert rows([clause]) == expected


@pytest.mark.parametrize('domain, expected', [
    ([], 'ABCD'),
    (['AND'], 'ABCD'),
    (['OR'], ''),
    (['OR', ('integer', '=', 1), ('char', '=', 'apricot')], 'AB'),
    (['AND', ('integer', '>', 1), ('integer', '<', 3)], 'B'),
    ([('integer', '>', 1), ('integer', '<', 3)], 'B'),
    ([('integer', '>', 0),
        ['OR', ('char', 'like', 'A%'), ('char', 'like', '5%')]], 'AC'),
    (['OR', [('integer', '=', 1), ('boolean', '=', True)],
        [('integer', '=', 3)]], 'AC'),
    (['OR', ['AND', ('integer', '>=', 1), ('integer', '<=', 2)],
        ('integer', '=', None)], 'ABD'),
    ([[[('integer', '=', 2)]]], 'B'),
    (('integer', '=', 3), 'C'),
    ], ids=repr)
def test_domains_nest_and_join(rows, domain, expected):
    assert rows(domain) == expected


def test_id_and_many2one_take_records(env, rows):
    a, c = rows.records['A'], rows.records['C']
    assert rows([('id', '=', a)]) == 'A'
    assert rows([('id', 'in', [a, c.id])]) == 'AC'
    assert rows([('id', 'not in', [a])]) == 'BCD'
    with env.transaction():
        Party = Pool().get('test.party')
        party, = Party.create([{'name': 'owner'}])
        Pool().get('test.everything').write([a], {'party': party})
    assert rows([('party', '=', party)]) == 'A'
    assert rows([('party', '=', party.id)]) == 'A'
    assert rows([('party', 'in', [party])]) == 'A'
    assert rows([('party', '=', None)]) == 'BCD'


@pytest.mark.parametrize('domain, message', [
    ('integer = 1', 'A domain is a list of clauses'),
    ([5], 'A domain is a list of clauses, not 5'),
    ([('nope', '=', 1)], "'test.everything' has no field 'nope'"),
    ([('integer', '~', 1)], "operator '~'"),
    ([('integer', '~', 1)], 'use one of =, !=, <'),
    ([('integer', '=')], "('integer', '=') is not (field, operator, value)"),
    ([('integer', 5, 1)], 'is not (field, operator, value)'),
    ([('integer', '=', 1, 2)], 'is not (field, operator, value)'),
    ([('integer', '=', 1), 'OR', ('integer', '=', 2)],
        "'OR' must be the first item"),
    ([('integer', 'in', 1)], "'in' takes a list, not 1"),
    ([('integer', 'not in', 'abc')], "'not in' takes a list"),
    ([('char', 'like', 1)], "'like' takes a string, not 1"),
    ([('char', 'ilike', None)], 'None can be compared with = and !='),
    ([('integer', '<', None)], "None can be compared with = and != only"),
    ], ids=repr)
def test_bad_domain_is_refused_with_a_useful_message(env, domain, message):
    with env.transaction():
        Everything = Pool().get('test.everything')
        with pytest.raises(DomainError) as info:
            Everything.search(domain)
    assert message in info.value.message
    assert isinstance(info.value, ModelError)


def test_search_count_takes_the_same_domains(env, rows):
    with env.transaction():
        Everything = Pool().get('test.everything')
        assert Everything.search_count([]) == 4
        assert Everything.search_count(
            ['OR', ('integer', '=', 1), ('integer', '=', None)]) == 2
        assert Everything.search_count([('boolean', '=', False)]) == 3
