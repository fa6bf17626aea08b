"""An Anthropic-compatible emulator: the Messages and Message Batches APIs, state on disk.

The official ``anthropic`` SDK talks to it unchanged, either in process (an ``httpx2`` WSGI
transport, no server) or over HTTP (``llm-pipelines emulator serve``)::

    client = in_process_client(EmulatorConfig(state_dir=".llm_pipelines/emulator"))
    client.messages.batches.create(requests=[...])
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx2
from werkzeug.serving import BaseWSGIServer, make_server

from llm_pipelines.emulator.app import EmulatorApp
from llm_pipelines.emulator.config import EmulatorConfig, FaultPlan
from llm_pipelines.emulator.store import EmulatorStore

IN_PROCESS_URL = "http://anthropic-emulator.invalid"
"""The base URL an in-process client uses; nothing is ever sent over a network to it."""
EMULATOR_API_KEY = "emulator-no-key"
"""What the SDK sends as its key to the emulator; the emulator only checks that one is sent."""

__all__ = [
    "EMULATOR_API_KEY",
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorStore",
    "FaultPlan",
    "in_process_client",
    "serve",
    "serving",
]


def in_process_client(
    config: EmulatorConfig | EmulatorApp, **client_options: Any
) -> anthropic.Anthropic:
    """An ``anthropic.Anthropic`` client whose requests are answered by the emulator in process."""
    app = config if isinstance(config, EmulatorApp) else EmulatorApp(config)
    http_client = httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url=IN_PROCESS_URL)
    return anthropic.Anthropic(
        api_key=EMULATOR_API_KEY, base_url=IN_PROCESS_URL, http_client=http_client, **client_options
    )


def make_emulator_server(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> BaseWSGIServer:
    """A threaded HTTP server for the emulator (port 0 picks a free one)."""
    return make_server(host, port, EmulatorApp(config), threaded=True)


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the emulator over HTTP until interrupted."""
    server = make_emulator_server(config, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@contextmanager
def serving(config: EmulatorConfig, host: str = "127.0.0.1") -> Iterator[str]:
    """Run the emulator over HTTP on a free loopback port for the block; yields its base URL."""
    server = make_emulator_server(config, host, 0)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="anthropic-emulator",
        daemon=True,
    )
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
