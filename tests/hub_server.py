"""A model hub on 127.0.0.1 for the tests: the endpoints huggingface_hub's snapshot_download
calls (repo info, the file tree, resolve), serving one repository from a local directory and
counting the requests, so a test sees how often a model was fetched."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repo_id: str, folder: Path):
        self.repo_id, self.folder = repo_id, Path(folder)
        self.files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        self.requests: Counter[str] = Counter()  # "GET /path" -> count
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloads(self) -> int:
        """Requests for file contents (GET .../resolve/...)."""
        return sum(n for k, n in self.requests.items() if k.startswith("GET") and "/resolve/" in k)

    def tree(self) -> list[dict]:
        return [
            {"type": "file", "path": name, "size": p.stat().st_size,
             "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
            for name, p in sorted(self.files.items())
        ]  # fmt: skip

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def json(self, obj: object) -> None:
                self.reply(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = unquote(urlparse(self.path).path)
                with hub.lock:
                    hub.requests[f"{self.command} {path}"] += 1
                api = f"/api/models/{hub.repo_id}/"
                resolve = f"/{hub.repo_id}/resolve/"
                if path.startswith(api + "revision/"):
                    siblings = [{"rfilename": f} for f in sorted(hub.files)]
                    return self.json({"id": hub.repo_id, "sha": COMMIT, "siblings": siblings})
                if path.startswith(api + "tree/"):
                    return self.json(hub.tree())
                if path.startswith(resolve):
                    name = path[len(resolve) :].split("/", 1)[1]
                    if name not in hub.files:
                        return self.reply(404, b"", {"X-Error-Code": "EntryNotFound"})
                    body = hub.files[name].read_bytes()
                    etag = hashlib.sha1(body).hexdigest()
                    return self.reply(200, body, {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT})
                self.reply(404, b"", {"X-Error-Code": "RepoNotFound"})

        return Handler
