"""`tritonfleet dashboard`: the Grafana dashboards' panels, live, in a browser, without Grafana.

A small HTTP server on loopback serves one self-contained HTML page (no network loads) and relays
its range queries to Prometheus, so the browser needs no cross-origin access to Prometheus.
Only Prometheus' read-only query_range endpoint is relayed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from observability.live_panels import live_dashboards

LOOPBACK = "127.0.0.1"
RELAYED_PATH = "/api/v1/query_range"


def page_html(prometheus_url: str, rate_interval: str, range_s: int, refresh_s: int) -> str:
    template = resources.files("observability").joinpath("static/dashboard.html").read_text()
    config = {"dashboards": live_dashboards(rate_interval), "prometheus": prometheus_url,
              "rangeSeconds": range_s, "refreshSeconds": refresh_s}
    # "</" cannot end the script element early once escaped.
    return template.replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))


def make_handler(prometheus_url: str, page: str):
    page_bytes = page.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urllib.parse.urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", page_bytes)
            elif url.path == RELAYED_PATH:
                self._relay(url.query)
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

        def _relay(self, query: str) -> None:
            target = f"{prometheus_url.rstrip('/')}{RELAYED_PATH}?{query}"
            try:
                with urllib.request.urlopen(target, timeout=15) as response:
                    self._send(HTTPStatus.OK, "application/json", response.read())
            except urllib.error.HTTPError as exc:
                self._send(exc.code, "application/json", exc.read())
            except (urllib.error.URLError, OSError) as exc:
                body = json.dumps({"status": "error", "error": f"cannot reach Prometheus: {exc}"}).encode()
                self._send(HTTPStatus.BAD_GATEWAY, "application/json", body)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    return Handler


def make_server(prometheus_url: str, port: int = 0, rate_interval: str = "1m",
                range_s: int = 900, refresh_s: int = 5) -> ThreadingHTTPServer:
    """A server bound to loopback (port 0 picks a free one); call serve_forever() on it."""
    if not prometheus_url.startswith(("http://", "https://")):
        raise ValueError(f"--prometheus must be an http(s) URL, got {prometheus_url!r}")
    page = page_html(prometheus_url, rate_interval, range_s, refresh_s)
    server = ThreadingHTTPServer((LOOPBACK, port), make_handler(prometheus_url, page))
    server.daemon_threads = True
    return server
