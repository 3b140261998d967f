"""Instructions per request, counted by valgrind (callgrind): a figure that machine noise does not move.

The server, the app and the upstream client run in one process; a greenlet of the same process sends
requests back to back on one keep-alive connection; the upstream is the bench's nginx mock. The
process runs twice, with N and N + 1,000 requests, so start-up cancels out of the difference. Only
user-space instructions are counted (the kernel's side of each system call is not).

Scenarios: ``proxy`` (a chat completion proxied to nginx), ``dummy`` (answered by the dummy provider),
``raw`` (a trivial WSGI app on our server: the server alone), ``floor`` (the driving greenlet alone,
against nginx). Run: ``.venv/bin/python bench/instructions.py [--baseline REF] [--scenario proxy]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import REPO, Procs, free_port  # noqa: E402

SCENARIOS = ("proxy", "dummy", "raw", "floor")
FEW, MANY = 300, 1300
BODY = b'{"model":"chat","messages":[{"role":"user","content":"Hello! Say hi back."}]}'


def _drive(n: int, upstream: int, scenario: str) -> None:
    """In the measured process: serve, and send ``n`` requests to ourselves."""
    from gevent import monkey

    monkey.patch_all()
    import socket

    import gevent

    sys.path.insert(0, os.getcwd())  # the tree under test, not the installed one
    from gateway.app import create_app
    from gateway.config import load_config_text
    from providers.registry import build_registry

    provider = ('type = "dummy"\nmodel_name = "text"\n' if scenario == "dummy" else
                f'type = "openai"\nmodel_name = "chat"\napi_base = "http://127.0.0.1:{upstream}/v1"\n'
                'api_key_location = "none"\n')
    registry = build_registry()
    config = load_config_text(f'[models."chat"]\nrouting = ["p"]\n[models."chat".providers.p]\n{provider}', "x", registry)
    if scenario == "raw":
        def app(env, start_response):
            env["wsgi.input"].read()
            start_response("200 OK", [("content-type", "application/json"), ("content-length", "2")])
            return [b"{}"]
    else:
        app = create_app(config, registry)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    try:
        from gateway.server.request import ServerLimits
        from gateway.server.wsgi import GatewayServer

        server = GatewayServer(listener, app, limits=ServerLimits(), max_connections=16)
    except ImportError:  # a tree from before gateway/server/: pywsgi's handler
        from gateway.server import GatewayServer

        server = GatewayServer(listener, app)
    server.start()
    port = upstream if scenario == "floor" else listener.getsockname()[1]
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))

    def client() -> None:
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(n):
            conn.sendall(request)
            while True:
                head = buf.find(b"\r\n\r\n")
                if head >= 0:
                    at = buf.find(b"ength: ", 0, head)  # Content-Length, in either case
                    end = head + 4 + int(buf[at + 7:buf.find(b"\r\n", at)])
                    if len(buf) >= end:
                        buf = buf[end:]
                        break
                buf += conn.recv(65536)
        conn.close()

    gevent.spawn(client).join()


def _count(tree: Path, n: int, upstream: int, scenario: str) -> int:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"callgrind.{os.getpid()}.out"
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__, "--drive",
         str(n), str(upstream), scenario], cwd=tree, capture_output=True, text=True, timeout=1800)
    out.unlink(missing_ok=True)
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if m is None:
        raise RuntimeError(f"callgrind counted nothing:\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    if sys.argv[1:2] == ["--drive"]:
        _drive(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", metavar="REF", help="count the tree of this commit too (a git worktree)")
    ap.add_argument("--scenario", choices=SCENARIOS, action="append", help="default: proxy")
    args = ap.parse_args()
    with Procs() as procs:
        mock, proxy = free_port(), free_port()
        procs.nginx(mock, proxy)
        trees = {"this tree": REPO}
        if args.baseline:
            trees[args.baseline] = procs.baseline(args.baseline)
        for scenario in args.scenario or ["proxy"]:
            for name, tree in trees.items():
                few, many = _count(tree, FEW, mock, scenario), _count(tree, MANY, mock, scenario)
                print(f"{scenario:<6} {name:<12} {(many - few) / (MANY - FEW):>10,.0f} instructions per request",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
