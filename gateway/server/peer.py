"""The client at the other end of a connection, as the app sees it: is it still there, and tell me when it leaves.

The server puts one ``Peer`` in every request's environ under ``PEER_KEY``. Routing asks ``gone()``
before it tries another provider (no fallback call for a client that left); a relayed stream
``watch``es it, so a client that hangs up while the upstream is quiet is noticed at once.
"""

from __future__ import annotations

import socket

import gevent
from gevent.socket import wait_read

__all__ = ["ClientDisconnected", "PEER_KEY", "Peer"]

#: The WSGI environ key of the request's ``Peer``.
PEER_KEY = "budgateway.peer"


class ClientDisconnected(gevent.GreenletExit):
    """Thrown into the request greenlet when the client hung up while it waits on the upstream.

    A ``GreenletExit``: should it land outside the stream (in a write), the connection ends quietly,
    as for any hang-up.
    """


class Peer:
    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def gone(self) -> bool:
        """Whether the client closed its side (or the connection broke); never blocks.

        NOTE: bytes waiting (a pipelined request) mean the client is there.
        """
        sock = self._sock
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            return not sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(timeout)

    def watch(self, request: gevent.Greenlet) -> gevent.Greenlet:
        """Interrupt ``request`` with ``ClientDisconnected`` when the client hangs up; kill the watcher when done."""
        return gevent.spawn(_watch, self._sock, request)


def _watch(sock: socket.socket, request: gevent.Greenlet) -> None:
    try:
        wait_read(sock.fileno())
        if sock.recv(1, socket.MSG_PEEK):
            return  # the client sent more (pipelining): not a hang-up
    except OSError:
        pass
    request.kill(ClientDisconnected(), block=False)
