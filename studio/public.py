"""Public mode: the studio as strangers may reach it (a Space, a non-loopback bind, a share link).

Everything the studio serves over HTTP a visitor can call directly, bypassing the page. In public mode
the studio offers only what is safe to offer to anyone: generation from an uploaded picture with the
model, memory mode and providers the owner configured, each visitor's own history and Stop, and a
bounded queue. The tabs that start processes or read server data (Data wheel, Train, Evaluate) are not
built at all, so their endpoints do not exist. An owner who wants them sets `DSD_PASSWORD`: behind a
login the studio is the owner's, and whole.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

from gradio.utils import get_upload_folder, is_in_or_equal

from pipeline.errors import UserInputError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
QUEUE_LIMIT = 16  # generations waiting at once; more are refused by Gradio's queue with "queue full"
PER_VISITOR = 1  # generations one visitor may have waiting or running at once: one visitor cannot hold the GPU
NOTE = ("**Public mode**: generation only, from pictures you upload; your history and Stop are your own. "
        "The Data wheel, Train and Evaluate tabs are off (the owner turns them on behind `DSD_PASSWORD`).")


def is_public(host: str, share: bool = False, forced: bool = False) -> bool:
    """Public when asked (`--public`, DSD_PUBLIC=1), and whenever others can reach the studio (a Space,
    a non-loopback bind, a share link) unless the owner has put it behind DSD_PASSWORD."""
    if forced or os.environ.get("DSD_PUBLIC", "").lower() in ("1", "true", "yes"):
        return True
    if os.environ.get("DSD_PASSWORD"):
        return False
    return bool(os.environ.get("SPACE_ID")) or share or host not in LOOPBACK


def uploaded_picture(value) -> str | None:
    """The server path of a picture a visitor sent, checked to be one Gradio received as an upload (or
    one of the studio's examples, which Gradio copies into the same folder). A path the caller names
    (`{"path": "/etc/..."}`) is refused without saying whether it exists."""
    if value is None or value == "":
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, (str, Path)) or not path or not is_in_or_equal(str(path), get_upload_folder()):
        raise UserInputError("the reference must be a picture uploaded to the studio: upload it (or pick an example)")
    return str(path)


def served_paths(home: Path, public: bool) -> tuple[list[str], list[str]]:
    """(allowed, blocked) paths for Gradio's file route. Public: nothing of the data folder (pictures reach
    a visitor as copies in Gradio's cache, by content hash); local: the data folder but its database."""
    home = home.expanduser().resolve()
    database = [str(home / name) for name in ("dsd.sqlite", "dsd.sqlite-wal", "dsd.sqlite-shm")]
    return ([] if public else [str(home)]), database


class Visitors:
    """Per visitor (Gradio's session hash): the generations they made, and at most `per_visitor` of theirs
    waiting or running. Generations take turns on one lock (the GPU), so a visitor's second request is
    refused at once instead of queueing behind their first; `running` is whose turn it is, so that Stop
    stops only one's own."""

    def __init__(self, per_visitor: int = PER_VISITOR):
        self.per_visitor = per_visitor
        self._lock, self._gpu = threading.Lock(), threading.Lock()
        self._made: dict[str, list[int]] = {}
        self._in_flight: dict[str, int] = {}
        self.running: str | None = None

    @contextmanager
    def generating(self, visitor: str):
        with self._lock:
            if self._in_flight.get(visitor, 0) >= self.per_visitor:
                raise UserInputError("you already have a generation waiting or running: wait for it, or press Stop")
            self._in_flight[visitor] = self._in_flight.get(visitor, 0) + 1
        try:
            with self._gpu:
                self.running = visitor
                try:
                    yield
                finally:
                    self.running = None
        finally:
            with self._lock:
                self._in_flight[visitor] -= 1

    def made(self, visitor: str, generation_id: int) -> None:
        with self._lock:
            self._made.setdefault(visitor, []).append(generation_id)

    def generations(self, visitor: str) -> set[int]:
        with self._lock:
            return set(self._made.get(visitor, []))
