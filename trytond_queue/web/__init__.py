"""The web dashboard and the Prometheus metrics of a queue.

:func:`trytond_queue.web.app.make_app` returns the WSGI application; see
its module for serving it.
"""
