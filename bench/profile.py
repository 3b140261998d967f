"""Profile one gateway worker under load: py-spy samples it while wrk drives non-streaming requests.

Keeps the collapsed stacks (the input of any flame-graph tool) in bench/results/profile-CLIENT.txt and
prints the functions with the most samples, own and inclusive.
With ``--observe``, analytics (a real ClickHouse) and traces (a local OTLP receiver) are on.
Run: ``.venv/bin/python bench/profile.py [--client geventhttpclient] [--seconds 8] [--observe]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import wrk_max  # noqa: E402
from procs import Procs, free_port, worker_pids  # noqa: E402
from run import CHAT_BODY, RESULTS  # noqa: E402


def _frame(name: str) -> str:
    func, _, where = name.partition(" (")
    return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else func


def _top(raw: Path, count: int) -> str:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        samples = int(n)
        total += samples
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for f in set(frames):
            inclusive[f] += samples
    lines = [f"{total} samples", "own:"]
    lines += [f"  {100 * v / total:5.1f}% {k}" for k, v in own.most_common(count)]
    lines += ["inclusive:"]
    lines += [f"  {100 * v / total:5.1f}% {k}" for k, v in inclusive.most_common(count)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--client", default="geventhttpclient", choices=("geventhttpclient", "urllib3"))
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--observe", action="store_true", help="analytics and traces on")
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    spy = Path(sys.executable).with_name("py-spy")
    RESULTS.mkdir(exist_ok=True)
    with Procs() as procs, contextlib.ExitStack() as stack:
        options = {}
        if args.observe:
            from observe import ClickHouseServer, OTLPReceiver, everything_on

            work = Path(tempfile.mkdtemp(prefix="budgateway-profile-"))
            clickhouse = ClickHouseServer(work).start()
            stack.callback(clickhouse.stop, kill=True)
            receiver = OTLPReceiver(decode=False).start()
            stack.callback(receiver.stop)
            options = everything_on(clickhouse, receiver, work)
        mock, proxy, stream = free_port(), free_port(), free_port()
        procs.nginx(mock, proxy)
        procs.stream_mock(stream)
        port = free_port()
        pid = worker_pids(procs.gateway("gw-profile", port, mock, stream, [], client=args.client, workers=1,
                                               **options))[0]
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        load = threading.Thread(target=wrk_max, args=("profile", url, CHAT_BODY, args.connections,
                                                              args.seconds + 4))
        load.start()
        raw = RESULTS / f"profile-{args.client}{'-observe' if args.observe else ''}.txt"
        subprocess.run([str(spy), "record", "-p", str(pid), "-d", str(args.seconds), "-r", "500", "--nonblocking",
                        "--format", "raw", "-o", str(raw)], check=True, capture_output=True)
        load.join()
        print(_top(raw, args.top))
    print(f"collapsed stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
