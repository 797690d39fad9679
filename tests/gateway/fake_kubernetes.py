"""FakeKubernetesApiServer: a TEST DOUBLE for the one part that cannot run here, the Kubernetes API
server. It speaks the API's JSON for EndpointSlices only — list, and watch as a stream of
newline-delimited events — so the gateway's real `kubernetes` client code can be exercised."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def endpoint_slice(name: str, service: str, port: int, endpoints: list[dict], namespace: str = "default") -> dict:
    """An EndpointSlice as the API returns it; `endpoints` items: {"ip", "ready", "serving", "terminating"}."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [e["ip"]], "conditions": {key: e[key] for key in ("ready", "serving", "terminating") if key in e}}
            for e in endpoints
        ],
    }


class FakeKubernetesApiServer:
    def __init__(self):
        self.slices: dict[str, dict] = {}
        self.version = 1
        self.watchers: list[queue.Queue] = []
        # Every event with the version it made, so a watch from resourceVersion N first replays what
        # came after N, as the real API server does (a change between list and watch is not lost).
        self.history: list[tuple[int, dict]] = []
        self.lock = threading.Lock()
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                fake.requests.append(self.path)
                if not url.path.endswith("/endpointslices"):
                    self.send_error(404)
                    return
                query = parse_qs(url.query)
                selector = query.get("labelSelector", [""])[0]
                if query.get("watch", ["false"])[0] in ("true", "1"):
                    self._watch(selector, int(query.get("resourceVersion", ["0"])[0] or 0))
                else:
                    self._list(selector)

            def _list(self, selector: str):
                with fake.lock:
                    items = [s for s in fake.slices.values() if _matches(s, selector)]
                    body = json.dumps({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                                       "metadata": {"resourceVersion": str(fake.version)}, "items": items}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _watch(self, selector: str, since: int):
                events: queue.Queue = queue.Queue()
                with fake.lock:
                    for version, event in fake.history:
                        if version > since:
                            events.put(event)
                    fake.watchers.append(events)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while True:
                        event = events.get()
                        if event is None:
                            break
                        if not _matches(event["object"], selector):
                            continue
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with fake.lock:
                        if events in fake.watchers:
                            fake.watchers.remove(events)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def put(self, item: dict) -> None:
        """Create or replace a slice and tell every watcher."""
        with self.lock:
            self.version += 1
            kind = "MODIFIED" if item["metadata"]["name"] in self.slices else "ADDED"
            item["metadata"]["resourceVersion"] = str(self.version)
            self.slices[item["metadata"]["name"]] = item
            self._publish({"type": kind, "object": item})

    def delete(self, name: str) -> None:
        with self.lock:
            self.version += 1
            item = self.slices.pop(name)
            self._publish({"type": "DELETED", "object": item})

    def _publish(self, event: dict) -> None:
        """Record an event and hand it to every open watch (the caller holds the lock)."""
        self.history.append((self.version, event))
        for watcher in self.watchers:
            watcher.put(event)

    def kubeconfig(self, path) -> None:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "test"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        }))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        with self.lock:
            for watcher in self.watchers:
                watcher.put(None)
        self.server.shutdown()
        self.server.server_close()


def _matches(item: dict, selector: str) -> bool:
    if not selector:
        return True
    key, _, value = selector.partition("=")
    return item["metadata"].get("labels", {}).get(key) == value
