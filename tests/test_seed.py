"""The seed example runs unchanged, with Model and with ModelSQL."""
from trytond_queue.pool import Pool


def test_seed_example_runs_at_commit_with_model(env):
    with env.transaction():
        Seed = Pool().get('my_model')
        Seed.launch([Seed(1), Seed(2)])
    with env.transaction():
        Queue = Pool().get('ir.queue')
        tasks = Queue.search([])
        assert [(t.model, t.method, t.state) for t in tasks] == [
            ('my_model', 'process', 'done')] * 2
        assert [t.data['instances'] for t in tasks] == [1, 2]
        assert [t.data['args'] for t in tasks] == [[42], [42]]


def test_seed_example_runs_at_commit_with_modelsql(env):
    with env.transaction():
        Seed = Pool().get('test.seed')
        records = Seed.create([{'value': 1}, {'value': 2}])
        Seed.launch(records)
    with env.transaction():
        Seed = Pool().get('test.seed')
        assert [r.value for r in Seed.search([])] == [42, 42]
