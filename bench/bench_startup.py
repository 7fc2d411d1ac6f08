"""How long the first hour waits: the studio's cold start, the store-only CLI commands, and the
cpu-smoke training in the foreground against the same run launched in the background.

Each figure is a fresh process timed from its start, on a fresh data folder, median of `--repeats`:
- studio: `dsd studio` until its page answers over HTTP (127.0.0.1);
- `dsd train status` and `dsd train stop RUN` (a done run: the request is refused) on a folder with one run;
- cpu-smoke in the foreground (`dsd train --preset cpu-smoke`) until the process ends;
- cpu-smoke launched (`dsd train launch --preset cpu-smoke`) until the run's job is done, polled every 0.2 s.

    python bench/bench_startup.py               # prints a Markdown table for the README
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DSD = [sys.executable, "-m", "studio.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], home: Path) -> float:
    started = time.perf_counter()
    subprocess.run(DSD + args + ["--home", str(home)], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def studio_start(home: Path) -> float:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(DSD + ["studio", "--home", str(home), "--host", "127.0.0.1", "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - started
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError("the studio exited before it served") from None
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)


def launched_smoke(home: Path) -> float:
    sys.path.insert(0, str(ROOT))
    from pipeline.store import Store

    started = time.perf_counter()
    subprocess.run(DSD + ["train", "launch", "--preset", "cpu-smoke", "--home", str(home)], cwd=ROOT, check=True,
                   capture_output=True)
    store = Store(home)
    while store.jobs(kind_prefix="train")[0]["status"] in ("running", "queued"):
        time.sleep(0.2)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            home = Path(folder)
            figures.setdefault("`dsd studio` until its page answers (fresh data folder)", []).append(studio_start(home))
            figures.setdefault("cpu-smoke, foreground (`dsd train --preset cpu-smoke`)", []).append(
                run(["train", "--preset", "cpu-smoke"], home))
            figures.setdefault("cpu-smoke, launched (`dsd train launch`) until done", []).append(launched_smoke(home))
            figures.setdefault("`dsd train status`", []).append(run(["train", "status"], home))
            started = time.perf_counter()
            subprocess.run(DSD + ["train", "stop", "1", "--home", str(home)], cwd=ROOT, capture_output=True)
            figures.setdefault("`dsd train stop 1` (a finished run: refused)", []).append(time.perf_counter() - started)
    print(f"| command ({os.cpu_count()} CPU cores, median of {args.repeats}) | seconds |\n|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.1f} (runs: {', '.join(f'{v:.1f}' for v in values)}) |")


if __name__ == "__main__":
    main()
