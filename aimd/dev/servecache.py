"""`aimd serve-cache`: a stand-in inference server that shows which models a pod was given.

An AIMService's pods mount every cached model read-only under `$AIM_CACHE_PATH/<modelId>`. A real
inference image would load them; this one, in the same image as aimd, lists them, so the real-node
tests (and a person with kubectl) can see that a Deployment started by aimd has the downloaded
files and cannot change them. It prints the listing at start and serves it as JSON on `--port`
(`/` and `/healthz`), and stops at once on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

DEFAULT_ROOT = "/workspace/model-cache"


def listing(root: Path) -> dict[str, Any]:
    """Per model directory (`org/name` under `root`): its files with sizes, and whether this
    process could write there."""
    models: dict[str, Any] = {}
    if not root.is_dir():
        return models
    for org in sorted(p for p in root.iterdir() if p.is_dir()):
        for model in sorted(p for p in org.iterdir() if p.is_dir()):
            files = {
                str(path.relative_to(model)): path.stat().st_size
                for path in sorted(model.rglob("*"))
                if path.is_file() and ".aimd" not in path.relative_to(model).parts
            }
            models[f"{org.name}/{model.name}"] = {
                "files": files,
                "writable": os.access(model, os.W_OK),
            }
    return models


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("AIM_CACHE_PATH") or DEFAULT_ROOT),
        help="where the models are mounted (default $AIM_CACHE_PATH, else /workspace/model-cache)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to serve the listing on")


def main(args: argparse.Namespace) -> int:
    root: Path = args.root
    body = json.dumps(listing(root), indent=2).encode()
    print(f"models under {root}:", flush=True)
    print(body.decode(), flush=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = body if self.path != "/healthz" else b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0
