"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests: it answers with a
real tiny model through the transformers engine, and can inject the faults real APIs produce
(429 with Retry-After, 500, dropped connections, truncated or malformed bodies, replies slower
than the client's timeout), from a list in order or at random at a configurable rate."""

from __future__ import annotations

import http.server
import json
import random
import threading
from collections import Counter, deque

FAULTS = ("429", "500", "drop", "truncate", "malformed", "slow")


class ChatServer:
    def __init__(
        self,
        engine,
        faults: list[str] | None = None,
        api_key: str | None = None,
        fault_rate: float = 0.0,
        seed: int = 0,
        delay: float = 0.0,
        finish_reason: str = "stop",
    ):
        self.engine, self.api_key, self.delay = (
            engine,
            api_key,
            delay,
        )  # delay: seconds added to each reply
        self.faults = deque(faults or [])  # consumed one per request, in order
        self.fault_rate, self.rng = (
            fault_rate,
            random.Random(seed),
        )  # then: each request, a random fault at this rate
        self.seen: Counter = (
            Counter()
        )  # what happened: "ok", "429", "500", "drop", "truncate", "slow", "401"
        self.finish_reason = finish_reason  # what every reply reports ("length": cut short)
        self.bodies: list[dict] = []  # every request body received, in order
        self.auth: list[str | None] = []  # and its Authorization header (None: not sent)
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                server.auth.append(self.headers.get("Authorization"))
                if (
                    server.api_key
                    and self.headers.get("Authorization") != f"Bearer {server.api_key}"
                ):
                    return self._send(401, {"error": "bad key"}, "401")
                with server.lock:
                    if server.faults:
                        fault = server.faults.popleft()
                    elif server.rng.random() < server.fault_rate:
                        fault = server.rng.choice(FAULTS)
                    else:
                        fault = "ok"
                if fault == "429":
                    return self._send(429, {"error": "slow down"}, "429", {"Retry-After": "0.05"})
                if fault == "500":
                    return self._send(500, {"error": "boom"}, "500")
                if fault == "drop":
                    server.seen["drop"] += 1
                    self.connection.close()
                    return
                if server.delay:
                    threading.Event().wait(server.delay)
                with server.lock:  # one generation at a time: the model is shared
                    reply = server.engine.generate([body["messages"]])[0]
                if body.get("stream"):  # server-sent events, a few characters per chunk
                    events = [
                        {"choices": [{"index": 0, "delta": {"content": reply[i : i + 7]}}]}
                        for i in range(0, len(reply), 7)
                    ]
                    raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                    return self._send_raw(
                        200, raw.encode(), "stream", {"Content-Type": "text/event-stream"}
                    )
                payload = {
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": server.finish_reason,
                        }
                    ],
                }
                if fault == "truncate":
                    raw = json.dumps(payload).encode()[:40]
                    return self._send_raw(200, raw, "truncate")
                if (
                    fault == "malformed"
                ):  # valid JSON, not a chat completion (a proxy's error page, say)
                    return self._send(
                        200, {"error": {"message": "upstream overloaded"}}, "malformed"
                    )
                if fault == "slow":
                    threading.Event().wait(1.5)
                self._send(200, payload, fault)

            def _send(self, status, payload, tag, headers=None):
                self._send_raw(status, json.dumps(payload).encode(), tag, headers)

            def _send_raw(self, status, raw, tag, headers=None):
                server.seen[tag] += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def injected(self) -> int:
        """Faults served so far."""
        return sum(n for tag, n in self.seen.items() if tag in FAULTS)

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
