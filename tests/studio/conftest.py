"""A running studio on a free port of 127.0.0.1, with its own data folder, closed after use."""

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.service import Settings
from studio.app import build_studio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_studio(home: Path, gpu_wrapper: Callable | None = None) -> Iterator[SimpleNamespace]:
    """The studio on the embedded tiny model: `url`, `home` (its data folder) and `settings`."""
    settings = Settings(home=home)
    app = build_studio(settings, gpu_wrapper)
    port = free_port()
    try:
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", home=home, settings=settings)
    finally:
        app.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("studio-home")) as running:
        yield running


@pytest.fixture
def start_studio():
    """`start_studio(home, gpu_wrapper=None)`, a context manager, for a test that needs its own studio."""
    return running_studio
