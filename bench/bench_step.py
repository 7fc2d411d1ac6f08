"""Per-denoising-step time and peak memory: the DSD generator vs diffusers' stock FluxPipeline.

Both run the same transformer weights (a tiny-but-not-trivial FLUX config built in code) and
produce the same output size. DSD denoises a canvas twice as wide (reference + output) and adds
the condition embedder, so it costs about twice the image tokens of a plain text-to-image step;
true guidance multiplies the batch by its number of passes. Each configuration runs in its own
process so that peak memory (CUDA: max allocated; CPU: peak RSS) is its own.

    python bench/bench_step.py                 # CPU, 512x512 output, 8 steps
    python bench/bench_step.py --device cuda --size 512 --steps 28
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = {
    "flux": "stock FluxPipeline, text-to-image",
    "dsd": "DSD generator (image 1.0, text 1.0: one pass)",
    "dsd-text-cfg": "DSD generator, text guidance 3 (two passes, batched)",
    "dsd-full-cfg": "DSD generator, image 1.5 + text 3 (three passes, batched)",
}


def bench_config():
    from pipeline.generation.tiny_flux import TinyConfig

    return TinyConfig(layers=4, single_layers=8, heads=4, head_dim=32, text_dim=64, vae_channels=(16, 32, 32, 32))


def run_case(case: str, size: int, steps: int, device: str) -> dict:
    import torch
    from diffusers import FluxPipeline
    from PIL import Image

    from pipeline.generation.pipeline import DSDPipeline
    from pipeline.generation.tiny_flux import build_tiny_components

    components = build_tiny_components(bench_config())
    stamps = []
    if case == "flux":
        components["transformer"] = flux_transformer_from(components["transformer"])
        pipe = FluxPipeline(**components).to(device)
        call = lambda: pipe(  # noqa: E731
            "a photo of a cat", height=size, width=size, num_inference_steps=steps, output_type="np",
            generator=torch.Generator().manual_seed(0),
            callback_on_step_end=lambda p, i, t, kw: stamps.append(time.perf_counter()) or {},
        )
    else:
        pipe = DSDPipeline(**components).to(device)
        scales = {"dsd": (1.0, 1.0), "dsd-text-cfg": (1.0, 3.0), "dsd-full-cfg": (1.5, 3.0)}[case]
        reference = Image.open(Path(__file__).resolve().parent.parent / "assets" / "examples" / "cat.jpg")
        call = lambda: pipe(  # noqa: E731
            reference, "a photo of a cat", height=size, width=size, num_inference_steps=steps, output_type="np",
            image_guidance_scale=scales[0], text_guidance_scale=scales[1],
            generator=torch.Generator().manual_seed(0),
            callback_on_step_end=lambda step, total: stamps.append(time.perf_counter()),
        )
    call()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stamps.clear()
    started = time.perf_counter()
    output = call()
    steps_s = [b - a for a, b in zip([started] + stamps[:-1], stamps)]
    per_step = sorted(steps_s[1:])[len(steps_s[1:]) // 2] if len(steps_s) > 1 else steps_s[0]
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"case": case, "per_step_s": per_step, "peak_mb": peak / 2**20, "output": list(output.images[0].shape)}


def flux_transformer_from(dsd_transformer):
    """The same weights in diffusers' stock FluxTransformer2DModel (no condition embedder)."""
    from diffusers import FluxTransformer2DModel

    flux = FluxTransformer2DModel.from_config(dsd_transformer.config)
    state = {k: v for k, v in dsd_transformer.state_dict().items() if not k.startswith("c_embedder.")}
    flux.load_state_dict(state)
    return flux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.size, args.steps, args.device)))
        return
    results = {}
    for case in CASES:
        child = subprocess.run(
            [sys.executable, __file__, "--case", case, "--size", str(args.size), "--steps", str(args.steps), "--device", args.device],
            capture_output=True, text=True, check=True,
        )
        results[case] = json.loads(child.stdout.strip().splitlines()[-1])
    base = results["flux"]["per_step_s"]
    config = bench_config()
    print(f"device {args.device}, output {args.size}x{args.size}, {args.steps} steps, transformer "
          f"{config.layers}+{config.single_layers} blocks, width {config.heads * config.head_dim}")
    print(f"{'case':<60} {'ms/step':>9} {'vs FLUX':>8} {'peak MB':>9}")
    for case, result in results.items():
        print(f"{CASES[case]:<60} {result['per_step_s'] * 1000:>9.1f} {result['per_step_s'] / base:>7.2f}x {result['peak_mb']:>9.0f}")


if __name__ == "__main__":
    main()
