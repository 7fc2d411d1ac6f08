"""A stranger's calls to a running studio: plain HTTP, as anyone on the internet could send them, with no
browser and no gradio_client to upload files or fill in what the page would."""

import json
import secrets
from pathlib import Path

import httpx

TIMEOUT = 240  # a hang guard: a 64 px picture takes well under a second, but the machine may be busy


def call(url: str, api_name: str, data: list, session: str | None = None) -> tuple[str, object]:
    """("complete", the outputs) or ("error", the message) of one call to a named endpoint, sent the way the
    page sends it (the queue's join and data routes, raw values: nothing checked on the way), or
    ("refused", the HTTP status) when the server does not take the call at all."""
    session = session or secrets.token_hex(8)
    with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        config = client.get("config").json()
        index = next((d["id"] for d in config["dependencies"] if d.get("api_name") == api_name), None)
        if index is None:
            return "refused", 404
        joined = client.post("gradio_api/queue/join", json={"data": data, "fn_index": index, "session_hash": session,
                                                            "event_data": None, "trigger_id": None})
        if joined.status_code != 200:
            return "refused", joined.status_code
        with client.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[len("data: "):]) if line.startswith("data: ") else {}
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    return ("complete", output.get("data")) if message.get("success") else ("error", output.get("error"))
    return "error", None


def endpoints(url: str) -> set[str]:
    """The named API endpoints the studio offers."""
    info = httpx.get(f"{url}gradio_api/info", timeout=TIMEOUT).json()
    return {name.lstrip("/") for name in info["named_endpoints"]}


def fetch_file(url: str, path: str | Path) -> int:
    """The HTTP status of asking the studio's file route for a server path."""
    return httpx.get(f"{url}gradio_api/file={path}", timeout=TIMEOUT).status_code


def upload(url: str, picture: Path) -> dict:
    """The file data of a picture uploaded the way the page uploads it."""
    with picture.open("rb") as handle:
        reply = httpx.post(f"{url}gradio_api/upload", files={"files": (picture.name, handle, "image/png")},
                           timeout=TIMEOUT)
    reply.raise_for_status()
    return {"path": reply.json()[0], "meta": {"_type": "gradio.FileData"}}
