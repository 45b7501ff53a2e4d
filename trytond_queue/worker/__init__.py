"""The worker: a manager process supervising processes that run tasks."""
