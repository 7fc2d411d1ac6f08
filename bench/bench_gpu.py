"""Peak memory and seconds per picture of every memory mode and generation setting, beside stock FluxPipeline.

For each memory mode this machine can run, the DSD generator draws one picture per panel size and setting
(a setting is `CACHE|GUIDANCE_STEPS`, as `dsd generate --cache ... --guidance-steps ...` takes them), and
diffusers' stock `FluxPipeline` draws a text-to-image picture of the same output size, placed by the same
memory mode. Each mode runs in its own process, so its peak is its own: CUDA's peak allocated memory per
picture on a GPU, the process's peak RSS so far on a CPU. A picture's time is one call after a 2-step
warm-up at the same size. The Markdown table goes to `--out` (and standard output).

    python bench/bench_gpu.py --base models/flux1-dev --dsd models/dsd --out bench/gpu_table.md
    python bench/bench_gpu.py --base models/flux1-dev --dsd models/dsd --modes int8_offload group_offload --sizes 1024
    python bench/bench_gpu.py                          # no --base: the tiny model on this machine (CI runs this)

Without `--base` a tiny FLUX-layout model (`pipeline.generation.tiny_flux`; 128 wide on a GPU) stands in, at 64 px,
2 steps, so the whole matrix is exercised on any CPU (and every GPU mode on a GPU without the weights);
its figures say nothing about FLUX.1-dev.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SETTING = "none|all"
# The caches, and the README's recommended fast preset (its guidance range only matters with true guidance:
# `--mode relight` runs three passes, and `--settings "none|all" "none|release" ...` measures ranges alone).
SETTINGS = (DEFAULT_SETTING, "fbc:0.08|all", "taylorseer:3|all", "taylorseer:3|0:0.5")
PROMPT = "a photo of the same cat sitting on a wooden table in a garden, soft morning light"
REFERENCE = ROOT / "assets" / "examples" / "cat.jpg"


def runnable_modes() -> list[str]:
    """The memory modes this machine can run (all GPU modes its GPU supports, or the CPU's)."""
    from pipeline.errors import UserInputError
    from pipeline.generation.memory import MODES, check_runs_here

    names = []
    for name, mode in MODES.items():
        try:
            check_runs_here(mode)
        except UserInputError:
            continue
        names.append(name)
    # On a GPU the CPU mode would take hours on FLUX.1-dev; without one it is the baseline.
    return [name for name in names if name != "cpu"] if "gpu" in names else names


def peak_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(call, device: str) -> tuple[float, int]:
    """Seconds of one call and the peak memory during it (CUDA), after a warm-up call."""
    import torch

    call(2)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    call(None)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, peak_bytes(device)


def run_dsd(args, mode: str) -> list[dict]:
    import torch

    from pipeline.generation.memory import load_in_mode
    from pipeline.generation.modes import get_mode
    from pipeline.generation.weights import ModelSpec
    from pipeline.images import load_image

    pipe, used, _ = load_in_mode(ModelSpec(base=args.base, dsd=args.dsd), mode)
    pipe.set_progress_bar_config(disable=True)
    device = pipe._execution_device.type
    reference, preset = load_image(REFERENCE), get_mode(args.mode)
    rows = []
    for size in args.sizes:
        for setting in args.settings:
            cache, guidance_steps = setting.split("|")
            call = lambda steps: pipe(  # noqa: E731
                reference, preset.prompt(PROMPT), height=size, width=size, num_inference_steps=steps or args.steps,
                image_guidance_scale=preset.image_guidance, text_guidance_scale=preset.text_guidance,
                generator=torch.Generator().manual_seed(0), cache=cache, guidance_steps=guidance_steps, output_type="np",
            )
            seconds, peak = timed(call, device)
            rows.append({"pipeline": "dsd", "mode": used, "size": size, "setting": setting, "s": seconds, "peak": peak})
    return rows


def run_flux(args, mode: str) -> list[dict]:
    """Stock diffusers text-to-image on the same base, placed by the same memory mode."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from pipeline.generation.memory import MODES, check_runs_here, place
    from pipeline.generation.weights import resolve_dtype

    device = check_runs_here(MODES[mode])
    dtype = resolve_dtype("auto", device)
    transformer = FluxTransformer2DModel.from_pretrained(args.base, subfolder="transformer", dtype=dtype)
    pipe = FluxPipeline.from_pretrained(args.base, transformer=transformer, dtype=dtype)
    place(pipe, MODES[mode], device)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for size in args.sizes:
        call = lambda steps: pipe(  # noqa: E731
            PROMPT, height=size, width=size, num_inference_steps=steps or args.steps,
            generator=torch.Generator().manual_seed(0), output_type="np",
        )
        seconds, peak = timed(call, device)
        rows.append({"pipeline": "flux", "mode": mode, "size": size, "setting": DEFAULT_SETTING, "s": seconds, "peak": peak})
    return rows


def run_case(args, pipeline: str, mode: str) -> list[dict]:
    return (run_dsd if pipeline == "dsd" else run_flux)(args, mode)


def markdown(rows: list[dict], device: str) -> str:
    """One line per mode, panel size and setting: DSD beside stock FLUX at the same output size."""
    unit = "peak GiB (CUDA allocated)" if device == "cuda" else "peak RSS GiB"
    flux = {(r["mode"], r["size"]): r for r in rows if r["pipeline"] == "flux"}
    lines = [f"| memory mode | panel | cache, guidance steps | DSD s/picture | DSD {unit} | FluxPipeline s/picture | FluxPipeline {unit} | DSD / FLUX time |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for row in (r for r in rows if r["pipeline"] == "dsd"):
        stock = flux.get((row["mode"], row["size"])) if row["setting"] == DEFAULT_SETTING else None
        cells = [row["mode"], f"{row['size']}", row["setting"].replace("|", ", "), f"{row['s']:.2f}", f"{row['peak'] / 2**30:.2f}"]
        cells += [f"{stock['s']:.2f}", f"{stock['peak'] / 2**30:.2f}", f"{row['s'] / stock['s']:.2f}x"] if stock else ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="FLUX.1-dev folder (default: a tiny model built here)")
    parser.add_argument("--dsd", help="DSD weights folder (released layout or a training run)")
    parser.add_argument("--modes", nargs="+", help="memory modes (default: every one this machine can run)")
    parser.add_argument("--sizes", nargs="+", type=int, help="panel sizes (default 512 1024; tiny: 64)")
    parser.add_argument("--steps", type=int, help="steps (default 28; tiny: 2)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="CACHE|GUIDANCE_STEPS settings")
    parser.add_argument("--mode", default="identity", help="generation mode, for its true guidance")
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    parser.add_argument("--in-process", action="store_true", help="run every case in this process (tests)")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # PIPELINE MODE, in a child process
    args = parser.parse_args(argv)
    tiny = args.base is None
    args.sizes = args.sizes or ([64] if tiny else [512, 1024])
    args.steps = args.steps or (2 if tiny else 28)
    return args


def main(argv=None) -> str:
    args = parse(argv)
    if args.case:
        print(json.dumps(run_case(args, *args.case)))
        return ""
    scratch = None
    if args.base is None:
        from pipeline.generation.tiny_flux import TinyConfig, save_tiny_model

        import torch

        # On a GPU 128 wide, so that every block layer has whole groups of 128 inputs and int4 rounds them.
        stand_in = TinyConfig(heads=4, head_dim=32, text_dim=64) if torch.cuda.is_available() else TinyConfig()

        scratch = tempfile.TemporaryDirectory()
        args.base = str(save_tiny_model(Path(scratch.name) / "tiny", stand_in))
    modes = args.modes or runnable_modes()
    rows = []
    for mode in modes:
        for pipeline in ("dsd", "flux"):
            if args.in_process:
                rows += run_case(args, pipeline, mode)
                continue
            child = [sys.executable, __file__, "--case", pipeline, mode, "--base", args.base, "--steps", str(args.steps),
                     "--mode", args.mode, "--sizes", *map(str, args.sizes), "--settings", *args.settings]
            child += ["--dsd", args.dsd] if args.dsd else []
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode:
                print(f"{pipeline} in {mode} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
                continue
            rows += json.loads(done.stdout.strip().splitlines()[-1])
    import torch

    table = markdown(rows, "cuda" if torch.cuda.is_available() else "cpu")
    header = (f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, {args.steps} steps, "
              f"mode {args.mode}, model {'tiny (stand-in)' if scratch else args.base}{' + ' + args.dsd if args.dsd else ''}\n\n")
    if args.out:
        args.out.write_text(header + table)
    print(header + table)
    if scratch:
        scratch.cleanup()
    return table


if __name__ == "__main__":
    main()
