"""Training speed and peak memory of the trainer, with and without the latent/text cache, and a
computed estimate of the paper's run (FLUX.1-dev, LoRA rank 512) on H100s.

With the cache (`TrainConfig.cache`), VAE latents and text embeddings are computed once before the
loop and the text encoders are freed; without it the VAE and both text encoders run at every step.
Each case is one `train()` call in its own process, so peak memory (CPU: peak RSS; CUDA: max
allocated) is its own. A step's time is the gap between the trainer's metric callbacks (one per
optimizer step), median after a few warm-up steps. Peak memory is read at the last step, before
the final checkpoint and samples.

    python bench/bench_train.py                                    # tiny untrained model, CPU
    python bench/bench_train.py --base /models/FLUX.1-dev --resolution 512 --batch 1 --steps 20
    python bench/bench_train.py --estimate                         # FLUX.1-dev on 1 and 8 H100s
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = {
    "cache": "cache on: latents + embeddings once, text encoders freed",
    "no-cache": "cache off: VAE + both text encoders every step",
}
GB = 1e9
# The tiny untrained FLUX (32 wide) these figures were first measured on; the embedded default is now
# the miniature, 4x wider, so naming this one keeps the README's figures comparable.
TINY = Path(__file__).resolve().parent.parent / "assets" / "tiny-dsd"


def bench_config(args, cache: bool, out: Path):
    """The tiny CPU preset on the shipped pairs, or the one-H100 preset (rank 512, bf16,
    checkpointing) when a FLUX folder is given; one micro-batch per optimizer step."""
    from train.config import load_preset

    config = load_preset("1x-h100" if args.base else "cpu-smoke")
    config.data = str(Path(__file__).resolve().parent.parent / "assets" / "pairs" / "examples.parquet")
    config.base, config.out, config.cache = args.base or str(TINY), str(out), cache
    config.resolution, config.steps, config.batch_size = args.resolution, args.steps, args.batch
    config.gradient_accumulation, config.warmup_steps = 1, 0
    config.checkpoint_every, config.sample_every, config.sample_count, config.sample_steps = 10**9, 0, 1, 1
    config.log_every = 10**9
    return config


def run_case(args, case: str) -> dict:
    import torch

    from train.trainer import train

    torch.set_num_threads(args.threads)
    stamps, peaks = [], {}

    def on_metrics(metrics: dict) -> None:
        stamps.append(time.perf_counter())
        if metrics["step"] == args.steps:  # peak of setup + loop, before the final checkpoint and samples
            peaks["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if torch.cuda.is_available():
                peaks["cuda"] = torch.cuda.max_memory_allocated()

    with tempfile.TemporaryDirectory() as home:  # a fresh home: the cache is computed in this run
        started = time.perf_counter()
        train(bench_config(args, case == "cache", Path(home) / "run"), Path(home), on_metrics=on_metrics)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup:]
    return {"case": case, "per_step_s": sorted(gaps)[len(gaps) // 2], "first_step_s": stamps[0] - started,
            "peak_rss_mb": peaks["rss"] / 2**20, "peak_cuda_mb": peaks["cuda"] / 2**20 if "cuda" in peaks else None}


def measure(args) -> None:
    results, load_before, began = {}, os.getloadavg()[0], time.perf_counter()
    for case in CASES:
        command = [sys.executable, __file__, "--case", case, "--resolution", str(args.resolution), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--warmup", str(args.warmup), "--threads", str(args.threads)]
        child = subprocess.run(command + (["--base", args.base] if args.base else []), capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"case {case} failed:\n{child.stderr[-3000:]}")
        results[case] = json.loads(child.stdout.strip().splitlines()[-1])
    cuda = results["cache"]["peak_cuda_mb"] is not None
    slow = results["no-cache"]["per_step_s"]
    print(f"{args.base or 'tiny untrained model'}, {'CUDA' if cuda else 'CPU'}, {os.cpu_count()} cores, torch threads "
          f"{args.threads}, panel {args.resolution} (canvas {args.resolution}x{2 * args.resolution}), batch {args.batch}, "
          f"{args.steps} steps (median of the last {args.steps - 1 - args.warmup}); load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; bench {time.perf_counter() - began:.0f} s\n")
    print(f"| case | ms/step | steps/s | vs cache off | first step after s | peak RSS MB |{' peak CUDA MB |' if cuda else ''}")
    print(f"|---|---:|---:|---:|---:|---:|{'---:|' if cuda else ''}")
    for case, r in results.items():
        print(f"| {CASES[case]} | {r['per_step_s'] * 1000:.0f} | {1 / r['per_step_s']:.2f} | {slow / r['per_step_s']:.2f}x "
              f"| {r['first_step_s']:.1f} | {r['peak_rss_mb']:.0f} |" + (f" {r['peak_cuda_mb']:.0f} |" if cuda else ""))


# The estimate: FLUX.1-dev's shape, the paper's LoRA, and H100s.

@dataclass(frozen=True)
class FluxShape:
    double_blocks: int = 19
    single_blocks: int = 38
    hidden: int = 3072
    mlp_ratio: int = 4
    image_tokens: int = 2048  # a 512x1024 canvas: 32x64 patches
    text_tokens: int = 512
    published_params: float = 12e9
    vae_params: float = 84e6  # resident during training; the text encoders are not (cache)

    @property
    def per_token_params(self) -> float:
        """Weights each token is multiplied by: in the double blocks one stream's attention + MLP (image
        and text tokens have their own), in the single blocks q/k/v + MLP in + the output projection.
        The AdaLN modulation runs once per sample, not per token."""
        h, m = self.hidden, self.hidden * self.mlp_ratio
        stream = 4 * h * h + 2 * h * m
        single = 3 * h * h + h * m + (h + m) * h
        return self.double_blocks * stream + self.single_blocks * single

    @property
    def block_params(self) -> float:
        """The largest FSDP unit (a double block: two streams and their modulation)."""
        h, m = self.hidden, self.hidden * self.mlp_ratio
        return 2 * (4 * h * h + 2 * h * m + 6 * h * h)

    @property
    def blocks_params(self) -> float:
        h, m = self.hidden, self.hidden * self.mlp_ratio
        return self.double_blocks * self.block_params + self.single_blocks * (3 * h * h + h * m + (h + m) * h + 3 * h * h)

    @property
    def tokens(self) -> int:
        return self.image_tokens + self.text_tokens


def lora_params(shape: FluxShape, rank: int) -> tuple[int, float]:
    """(adapted modules, trainable parameters): rank x (in + out) per square projection of the released
    targets, plus the condition embedder trained in full (Linear(64, hidden))."""
    modules = 8 * shape.double_blocks + 3 * shape.single_blocks
    return modules, modules * rank * 2 * shape.hidden + 64 * shape.hidden + shape.hidden


def train_flop_per_sample(shape: FluxShape, rank: int) -> dict:
    """Forward FLOP of one canvas and of a training step on it (gradient checkpointing). The frozen base
    needs input gradients only (1x its forward); LoRA and attention backward cost 2x; the recompute
    repeats the forward: training = 3x base forward + 4x (attention + LoRA)."""
    h, n = shape.hidden, shape.tokens
    base = 2 * n * shape.per_token_params
    attention = 4 * n * n * h * (shape.double_blocks + shape.single_blocks)
    lora_tokens = shape.double_blocks * 4 * (shape.image_tokens + shape.text_tokens) + shape.single_blocks * 3 * n
    lora = 2 * lora_tokens * rank * 2 * h
    return {"forward": base + attention + lora, "train": 3 * base + 4 * (attention + lora),
            "rule_of_thumb": 4 * 2 * shape.published_params * n}


def activation_bytes_per_sample(shape: FluxShape) -> float:
    """bf16 activations with checkpointing: every block's input is kept (tokens x hidden), plus one block
    recomputed during backward: ~10 hidden-wide and 2 MLP-wide tensors per token (norms, q/k/v, attention
    output, MLP in/out), their gradients about as much again."""
    h, m, n = shape.hidden, shape.hidden * shape.mlp_ratio, shape.tokens
    kept = (shape.double_blocks + shape.single_blocks) * n * h * 2
    working = 2 * n * (10 * h + 2 * m) * 2
    return kept + working


def memory_per_gpu(shape: FluxShape, trainable: float, batch: int, shards: int, overhead_gb: float) -> dict:
    """GB per GPU. FSDP shards the base, the LoRA, its gradients and AdamW states `shards` ways and
    holds two whole blocks gathered at a time (the one running and the prefetched next)."""
    gathered = 2 * shape.block_params * 2 if shards > 1 else 0
    return {
        "base weights, bf16 (+ VAE)": (shape.published_params * 2 / shards + gathered + shape.vae_params * 2) / GB,
        "trainable weights, fp32": trainable * 4 / shards / GB,
        "gradients, fp32": trainable * 4 / shards / GB,
        "AdamW states, fp32": trainable * 8 / shards / GB,
        "activations (checkpointed)": batch * activation_bytes_per_sample(shape) / GB,
        "CUDA context, workspace, fragmentation": overhead_gb,
    }


def estimate_flux_training(rank: int = 512, mfu: float = 0.40, peak_flops: float = 989e12,
                           nvlink_bytes_s: float = 450e9, overhead_gb: float = 3.0) -> tuple[list, dict]:
    """Rows (label, 1 GPU, 8 GPUs) of memory per GPU and time, and the assumptions used."""
    shape = FluxShape()
    modules, trainable = lora_params(shape, rank)
    flop = train_flop_per_sample(shape, rank)
    throughput = mfu * peak_flops
    columns = []
    for gpus, batch, accumulation in ((1, 1, 16), (8, 2, 10)):  # the 1x-h100 and 8x-h100-fsdp presets
        memory = memory_per_gpu(shape, trainable, batch, gpus, overhead_gb)
        step_s = batch * accumulation * flop["train"] / throughput
        # FSDP gathers the whole base three times per micro-batch (forward, recompute, backward).
        gather_s = 3 * shape.published_params * 2 * (gpus - 1) / gpus / nvlink_bytes_s
        columns.append({
            "setup": f"{gpus}x H100 80GB, {'FSDP full shard' if gpus > 1 else 'one process'}, batch {batch} x "
                     f"accumulation {accumulation}" + (f" x {gpus} GPUs" if gpus > 1 else ""),
            **{label: f"{value:.1f} GB" for label, value in memory.items()},
            "total per GPU": f"{sum(memory.values()):.1f} GB",
            "samples per optimizer step": f"{gpus * batch * accumulation}",
            "time per optimizer step": f"{step_s:.1f} s",
            "FSDP all-gathers per micro-batch (overlap with compute)": (
                f"{gather_s:.2f} s vs {batch * flop['train'] / throughput:.2f} s compute" if gpus > 1 else "none"),
            "100k optimizer steps": f"{100_000 * step_s / 86400:.1f} days",
            "the paper's 16M samples (100k x 160)": f"{16e6 * flop['train'] / (gpus * throughput) / 86400:.1f} days",
        })
    assumptions = {
        "LoRA": f"rank {rank} on {modules} projections ({shape.hidden}x{shape.hidden}) + condition embedder: "
                f"{trainable / 1e6:.0f}M trainable parameters",
        "transformer": f"{shape.blocks_params / 1e9:.2f}B parameters in the blocks from the shape, "
                       f"{shape.per_token_params / 1e9:.2f}B of them applied per token; weights counted as the published 12B",
        "FLOP per sample": f"forward {flop['forward']:.2e}, training {flop['train']:.2e} (the rule of thumb "
                           f"4 x 2 x 12e9 x {shape.tokens} gives {flop['rule_of_thumb']:.2e})",
        "throughput": f"{mfu:.0%} MFU of {peak_flops / 1e12:.0f} TFLOP/s bf16 dense = {throughput / 1e12:.0f} TFLOP/s "
                      f"per GPU; FSDP all-gathers at {nvlink_bytes_s / 1e9:.0f} GB/s, overlapped with compute",
    }
    return [(label, *(column[label] for column in columns)) for label in columns[0]], assumptions


def print_estimate(args) -> None:
    rows, assumptions = estimate_flux_training(rank=args.rank, mfu=args.mfu)
    print("FLUX.1-dev, LoRA on the released targets, 512x1024 canvas (2048 image + 512 text tokens), bf16 base, "
          "fp32 LoRA + AdamW, gradient checkpointing, latent/text cache: computed estimates, not measured\n")
    (_, *heads), *body = rows
    print(f"| | {' | '.join(heads)} |")
    print(f"|---|{'---:|' * len(heads)}")
    for label, *values in body:
        print(f"| {label} | {' | '.join(values)} |")
    print()
    for name, text in assumptions.items():
        print(f"- {name}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="FLUX.1-dev folder (default: the tiny untrained model in assets/tiny-dsd)")
    parser.add_argument("--resolution", type=int, default=128, help="panel size; the canvas is twice as wide")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=4, help="steps left out of the median")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--estimate", action="store_true", help="print the FLUX.1-dev estimate instead of measuring")
    parser.add_argument("--rank", type=int, default=512, help="LoRA rank of the estimate")
    parser.add_argument("--mfu", type=float, default=0.40, help="model FLOP utilisation assumed by the estimate")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    if args.estimate:
        print_estimate(args)
    elif args.case:
        print(json.dumps(run_case(args, args.case)))
    else:
        measure(args)


if __name__ == "__main__":
    main()
