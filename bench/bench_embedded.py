"""What an artist waits for on the embedded default: the miniature's teacher plus its curated student,
at its own size and steps (64 px, 20), loaded and run as the studio and `dsd generate` run it.

Reports the load time, then the median wall time of a single picture and of a batch of 8 (one
reference, eight seeds) over a few repeats, after one warm-up call.

    python bench/bench_embedded.py
    python bench/bench_embedded.py --repeats 10 --threads 1
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch

    from mini import world
    from mini.embedded import with_embedded
    from pipeline.generation.weights import ModelSpec, load_generator, sampling_defaults

    torch.set_num_threads(args.threads)
    spec = with_embedded(ModelSpec())
    size = sampling_defaults(spec)
    started = time.perf_counter()
    pipe = load_generator(spec)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - started
    reference = world.render(world.Identity("star", "purple", "plain", "white", "hat"), world.Context(scene="studio"))
    prompt = "a creature, in a desert, lit from the left, in warm light"

    def timed(count: int) -> float:
        began = time.perf_counter()
        pipe([reference] * count, [prompt] * count, height=size["height"], width=size["width"],
             num_inference_steps=size["steps"], generator=[torch.Generator().manual_seed(k) for k in range(count)])
        return time.perf_counter() - began

    print(f"{spec.describe()}; {size['width']}x{size['height']}, {size['steps']} steps; {os.cpu_count()} cores, "
          f"torch threads {args.threads}; load {load:.2f} s; load average {os.getloadavg()[0]:.2f}\n")
    print("| batch | median s | s per picture |\n|---:|---:|---:|")
    for count in (1, 8):
        timed(count)
        median = statistics.median(timed(count) for _ in range(args.repeats))
        print(f"| {count} | {median:.2f} | {median / count:.3f} |")


if __name__ == "__main__":
    main()
