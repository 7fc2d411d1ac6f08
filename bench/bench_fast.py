"""Step caches and guidance ranges on the miniature: seconds per picture and CP·PF, each beside the default.

The miniature is the quality instrument: for each setting its curated student samples the held-out items of
`dsd mini report` (`mini.benchmark.evaluation_items`: 16 per mode per evaluation seed, the same seeds per
item) and its attribute judge scores them (`mini.report.score`). Unlike the report's student row, which
samples every mode with one pass, each mode here runs with its own true guidance as Generate runs it
(relight: image 1.5, instruct: text 1.5, identity: none), so a guidance range has passes to save. The
default (no cache, guidance on every step) runs in the same process, before and after the others, and its
two timings are averaged; CP·PF's spread is the standard deviation across evaluation seeds, as in the report.
Seconds are this process's CPU seconds (`time.process_time`), so that other work on a shared machine does not
count; run it with one thread (`--threads 1`) for CPU seconds that are also wall seconds.

    python bench/bench_fast.py                       # the table, as the README shows it
    python bench/bench_fast.py --seeds 2 --settings "none|all" "fbc:0.2|all"
    python bench/bench_fast.py --student PATH        # another student (a retrained miniature)

A setting is CACHE|GUIDANCE_STEPS, as `dsd generate --cache ... --guidance-steps ...` takes them.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT = "none|all"
SETTINGS = (
    "none|release", "none|0.0:0.5", "none|0.2:0.8",
    "fbc:0.1|all", "fbc:0.2|all", "taylorseer:3|all", "mag:0.06|all", "pab:2|all",
    "taylorseer:3|0.0:0.5",
)


def sample(pipe, items, seed, steps, cache, guidance_steps):
    """The items' pictures, grouped by mode (one batched call each), and the seconds the calls took."""
    import torch

    from mini import PANEL
    from mini.teacher import GUIDANCE
    from pipeline.generation.modes import get_mode

    outputs, seconds = [None] * len(items), 0.0
    for mode in dict.fromkeys(item["mode"] for item in items):
        chosen = [k for k, item in enumerate(items) if item["mode"] == mode]
        preset = get_mode(mode)
        generators = [torch.Generator().manual_seed(seed * 10_000 + k) for k in chosen]  # as the report seeds them
        started = time.process_time()
        pictures = pipe([items[k]["reference"] for k in chosen], [items[k]["prompt"] for k in chosen],
                        height=PANEL, width=PANEL, num_inference_steps=steps, guidance_scale=GUIDANCE,
                        image_guidance_scale=preset.image_guidance, text_guidance_scale=preset.text_guidance,
                        generator=generators, cache=cache, guidance_steps=guidance_steps).images
        seconds += time.process_time() - started
        for k, picture in zip(chosen, pictures):
            outputs[k] = picture
    return outputs, seconds


def measure(pipe, judge, setting, seeds, per_mode, steps) -> dict:
    import numpy as np

    from mini.benchmark import evaluation_items
    from mini.report import score

    cache, guidance_steps = setting.split("|")
    products, cps, pfs, seconds, pictures = [], [], [], 0.0, 0
    for seed in range(seeds):
        items = evaluation_items(seed, per_mode)
        outputs, spent = sample(pipe, items, seed, steps, cache, guidance_steps)
        cp, pf = score(items, outputs, judge)
        cps.append(float(np.mean(cp)))
        pfs.append(float(np.mean(pf)))
        products.append(cps[-1] * pfs[-1])
        seconds, pictures = seconds + spent, pictures + len(items)
    return {"setting": setting, "s_per_picture": seconds / pictures, "cp": statistics.mean(cps),
            "pf": statistics.mean(pfs), "cp_pf": statistics.mean(products),
            "cp_pf_std": statistics.stdev(products) if len(products) > 1 else 0.0, "per_seed": products}


def table(rows: list[dict], default: dict) -> str:
    """One line per setting; the paired difference is per evaluation seed (the same items and seeds), mean ± std."""
    lines = ["| cache | guidance steps | s / picture | speed-up | CP | PF | CP·PF (± seed std) | "
             "ΔCP·PF, paired (± std) | within the default's spread |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        cache, guidance_steps = row["setting"].split("|")
        within = abs(row["cp_pf"] - default["cp_pf"]) <= default["cp_pf_std"]
        paired = [a - b for a, b in zip(row["per_seed"], default["per_seed"])]
        spread = statistics.stdev(paired) if len(paired) > 1 else 0.0
        lines.append(f"| {cache} | {guidance_steps} | {row['s_per_picture']:.4f} | "
                     f"{default['s_per_picture'] / row['s_per_picture']:.2f}x | {row['cp']:.3f} | {row['pf']:.3f} | "
                     f"{row['cp_pf']:.3f} ± {row['cp_pf_std']:.3f} | {statistics.mean(paired):+.3f} ± {spread:.3f} | "
                     f"{'yes' if within else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), help="CACHE|GUIDANCE_STEPS, beside the default")
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds (the report's: 3)")
    parser.add_argument("--per-mode", type=int, default=16, help="items per mode per seed (the report's: 16)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (the miniature's own: 20)")
    parser.add_argument("--student", help="DSD weights (default: the shipped curated student)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from mini import JUDGE, TEACHER
    from mini.judge import AttributeReader
    from mini.report import STUDENTS
    from pipeline.generation.weights import ModelSpec, load_generator

    torch.set_num_threads(args.threads)
    pipe = load_generator(ModelSpec(base=str(TEACHER), dsd=str(args.student or STUDENTS["student_curated"])))
    pipe.set_progress_bar_config(disable=True)
    judge = AttributeReader.from_pretrained(str(JUDGE)).eval()
    def run(setting: str) -> dict:
        row = measure(pipe, judge, setting, args.seeds, args.per_mode, args.steps)
        print(f"{setting}: {row['s_per_picture']:.4f} s a picture, CP·PF {row['cp_pf']:.3f}", file=sys.stderr, flush=True)
        return row

    with torch.no_grad():
        measure(pipe, judge, DEFAULT, 1, 1, 2)  # warm-up: the first calls pay for lazy initialisation
        first = run(DEFAULT)
        rows = [run(setting) for setting in args.settings]
        last = run(DEFAULT)
    default = {**first, "s_per_picture": (first["s_per_picture"] + last["s_per_picture"]) / 2}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"{time.strftime('%Y-%m-%d')}, commit {commit.strip()}, {args.seeds} seeds x {3 * args.per_mode} items, "
          f"{args.steps} steps, {torch.get_num_threads()} thread(s), CPU seconds; the default's two timings: "
          f"{first['s_per_picture']:.4f} and {last['s_per_picture']:.4f} s\n")
    print(table([default, *rows], default))


if __name__ == "__main__":
    main()
