#!/usr/bin/env python3
"""An upstream for memory and stall measurements: reads each request body to its end,
keeping none of it, and answers one small chat completion. Prints its address as
`listening on http://127.0.0.1:PORT` (the mock would parse the bodies, and measure
itself rather than the proxy)."""
import http.server
import json

ANSWER = json.dumps({
    "id": "chatcmpl-sink", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}).encode()


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        left = int(self.headers.get("content-length", 0))
        while left > 0:
            got = self.rfile.read(min(left, 1 << 20))
            if not got:
                return
            left -= len(got)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
