"""A webhook receiver for Alertmanager in the compose stack's test profile.

POST /alerts keeps the posted notification (JSON); GET /alerts returns every one kept,
oldest first, as a JSON list. At most 1000 are kept, each at most 1 MiB.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_KEPT = 1000
MAX_BODY = 1 << 20
lock = threading.Lock()
kept = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/alerts" or length > MAX_BODY:
            self.send_error(404 if self.path != "/alerts" else 413)
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400)
            return
        with lock:
            kept.append(notification)
            del kept[:-MAX_KEPT]
        print("alert notification:", json.dumps(notification), flush=True)
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        if self.path != "/alerts":
            self.send_error(404)
            return
        with lock:
            body = json.dumps(kept).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
