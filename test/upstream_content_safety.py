"""Azure AI Content Safety's ``text:analyze`` on loopback: ``api-version`` and ``Ocp-Apim-Subscription-Key``
checked, and a text holding ``FLAGGED_WORD`` analysed as Violence of severity 6 (everything else 0)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from upstream import free_port

__all__ = ["ContentSafetyUpstream", "FLAGGED_WORD", "KEY"]

FLAGGED_WORD = "forbidden"
KEY = "content-safety-test-key"


class _Handler(BaseHTTPRequestHandler):
    server: ContentSafetyUpstream

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.requests.append((url.path, dict(self.headers), body))
        if url.path != "/contentsafety/text:analyze" or not parse_qs(url.query).get("api-version"):
            self._send(404, {"error": {"code": "NotFound", "message": "no such operation"}})
        elif self.headers.get("Ocp-Apim-Subscription-Key") != KEY:
            self._send(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key"}})
        else:
            text = str(body.get("text", ""))
            categories = body.get("categories") or ["Hate", "SelfHarm", "Sexual", "Violence"]
            analysis = [{"category": c, "severity": 6 if c == "Violence" and FLAGGED_WORD in text else 0}
                        for c in categories]
            self._send(200, {"blocklistsMatch": [], "categoriesAnalysis": analysis})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class ContentSafetyUpstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[tuple[str, dict, dict]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def start(self) -> ContentSafetyUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
