"""The front door: the master (gunicorn's arbiter), its workers, and the HTTP/1.1 server in each worker.

- ``master``: binds the listening socket, runs the arbiter, reloads on SIGHUP.
- ``worker``: one process; serves with ``wsgi.GatewayServer`` and drains on SIGTERM.
- ``wsgi``: gevent's pywsgi server with our handler, a bounded pool of connections, the drain.
- ``connection``, ``request``: one connection's requests parsed (llhttp) and answered, strictly.
- ``peer``: what the app may ask of the client at the other end (is it still there?).
"""
