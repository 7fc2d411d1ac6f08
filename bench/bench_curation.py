"""Curation throughput: `curate` with the real `openai` client against the fake API on 127.0.0.1.

Every request waits a fixed latency on the server, so the ideal rate is concurrency / latency;
the share of it that `curate` reaches shows what the client, the JPEG encoding and the thread
pool cost. The replies are canned: these figures measure plumbing, never a model.

    python bench/bench_curation.py                       # 200 ms, concurrency 1, 4, 16
    python bench/bench_curation.py --latency 0.5 --concurrency 32 --pairs 320
"""

import argparse
import json
import multiprocessing
import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.images import load_image  # noqa: E402
from pipeline.providers import OpenAICompatibleProvider  # noqa: E402
from pipeline.wheel.curation import VLMCurator, curate  # noqa: E402
from tests.fake_api import FakeAPI  # noqa: E402

REPLY = json.dumps({
    "subject": "an espresso cup on a saucer",
    "description_a": "A white cup of espresso with crema on a white saucer, spoon on the right.",
    "description_b": "The same white cup and saucer, seen from a little higher.",
    "reasoning": "Cup shape, saucer rim and spoon match; only the viewpoint differs.",
    "same": True,
    "confidence": 0.9,
    "caption_target": "A white espresso cup on a saucer, seen from above, on a wooden table.",
    "caption_instruction": "Show the cup from a little higher.",
})


def serve(latency: float, pipe: Connection) -> None:
    """The fake API in its own process, so its work does not compete with the client's for the GIL."""
    with FakeAPI() as server:
        server.latency = latency
        server.reply = lambda body: REPLY
        pipe.send(server.openai_base_url)
        pipe.recv()  # until told to stop
        pipe.send(len(server.requests))


def run(base_url: str, latency: float, concurrency: int, pairs: int) -> dict:
    provider = OpenAICompatibleProvider("bench", base_url=base_url, max_retries=0)
    curator = VLMCurator(provider)
    examples = ROOT / "assets" / "examples"
    a, b = load_image(examples / "coffee.jpg"), load_image(examples / "cat.jpg")
    items = ((f"pair-{i}", a, b) for i in range(pairs))
    stats = curate(items, curator, concurrency=concurrency)
    assert stats.judged == pairs, stats
    rate = pairs / stats.seconds
    ideal = concurrency / latency
    return {"concurrency": concurrency, "pairs": pairs, "seconds": stats.seconds,
            "pairs_per_s": rate, "ideal_per_s": ideal, "share_of_ideal": rate / ideal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, s")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--pairs", type=int, nargs="+", default=None,
                        help="pairs per run (default: 10 rounds of the concurrency, at least 32)")
    args = parser.parse_args()
    pairs = args.pairs or [max(32, 10 * c) for c in args.concurrency]
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-key")
    pipe, child_end = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(args.latency, child_end), daemon=True)
    server.start()
    base_url = pipe.recv()
    run(base_url, args.latency, 1, 2)  # warm up: imports, first connection
    print(f"latency {args.latency * 1000:.0f} ms per request (fake server, canned replies)")
    print(f"{'concurrency':>11} {'pairs':>6} {'seconds':>8} {'pairs/s':>8} {'ideal':>7} {'share':>6}")
    for concurrency, count in zip(args.concurrency, pairs):
        row = run(base_url, args.latency, concurrency, count)
        print(f"{row['concurrency']:>11} {row['pairs']:>6} {row['seconds']:>8.2f} "
              f"{row['pairs_per_s']:>8.2f} {row['ideal_per_s']:>7.1f} {row['share_of_ideal']:>6.1%}")
    pipe.send("stop")
    served = pipe.recv()
    server.join(timeout=5)
    print(f"server answered {served} requests")


if __name__ == "__main__":
    main()
