"""An HTTP app for herd's gRPC SDK tests, on Python's standard library alone.

`GET /dapr/subscribe` subscribes to $TOPIC on `pubsub` at /events; every delivery is appended
as a JSON line to $RECEIVED_FILE. Any other request is answered with JSON {method, path, body,
caller}. Listens on $PORT (herd's `port = "auto"`).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if self.path == "/dapr/subscribe":
            return self.answer(200, [{"pubsubname": "pubsub", "topic": os.environ["TOPIC"],
                                      "route": "/events"}])
        if self.path == "/events":
            with open(os.environ["RECEIVED_FILE"], "a") as f:
                f.write(json.dumps(json.loads(body)) + "\n")
            return self.answer(200, {"status": "SUCCESS"})
        self.answer(200, {"method": self.command, "path": self.path, "body": body,
                          "caller": self.headers.get("dapr-caller-app-id")})

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
