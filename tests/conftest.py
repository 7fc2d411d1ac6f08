"""Shared pytest fixtures."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.fake_api import FakeAPI


@pytest.fixture
def fake_api():
    """A fake OpenAI/Gemini HTTP server on 127.0.0.1, shut down after the test."""
    with FakeAPI() as server:
        yield server


@pytest.fixture
def read_only():
    """`read_only(path)`: the file or folder cannot be written, not even by root (for whom permission bits
    change nothing, so `chattr +i`), until the returned `restore()` or the end of the test."""
    made: list[Path] = []

    def restore() -> None:
        while made:
            path = made.pop()
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(path)], check=True)
            else:
                path.chmod(0o755 if path.is_dir() else 0o644)

    def make(path: Path):
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                pytest.skip("root on a file system without chattr +i: nothing can be made read-only here")
        else:
            path.chmod(0o555 if path.is_dir() else 0o444)
        made.append(path)
        return restore

    yield make
    restore()
