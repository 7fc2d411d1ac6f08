"""Expected peak GPU memory of every memory mode on FLUX.1-dev + DSD, computed, not measured.

FLUX.1-dev's real configs are instantiated on the meta device (no weights, a second or two) and every
parameter counted; quantised layers are sized by torchao's storage formats; activations and workspace are
the estimates stated in `pipeline.generation.memory_table`. The DSD canvas is two panels wide (reference +
target), so a 1024 px panel is a 1024x2048 canvas. `bench/bench_gpu.py` measures the same modes on a GPU.

    python bench/bench_memory.py                # the README's tables
    python bench/bench_memory.py --passes 3     # true guidance with both scales (three passes batched)
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGETS = {512: 12, 1024: 16}  # panel size -> GiB of the card it should fit
EXACT = "same as bf16"


def fidelity(mode) -> str:
    return {"bf16": EXACT, "int8": "int8 weights: close to bf16", "fp8": "fp8 weights and activations",
            "int4": "int4 weights"}[mode.transformer]


def tables(footprint, passes: int = 1) -> str:
    from pipeline.generation.memory import MODES
    from pipeline.generation.memory_table import GIB, memory_rows

    names = {"transformer": "FLUX transformer + DSD condition embedder", "text_encoder": "CLIP-L text encoder",
             "text_encoder_2": "T5-XXL encoder", "vae": "VAE"}
    lines = ["| component | parameters | bf16 GiB | int8 GiB | fp8 GiB | int4 GiB |", "|---|---:|---:|---:|---:|---:|"]
    for component, sizes in footprint.bytes.items():
        cells = [f"{sizes[kind] / GIB:.2f}" if kind in sizes else "" for kind in ("bf16", "int8", "fp8", "int4")]
        lines.append(f"| {names[component]} | {footprint.parameters[component]:,} | " + " | ".join(cells) + " |")
    lines += ["", "| memory mode | pictures | 512 px panel, GiB | 1024 px panel, GiB | fits |", "|---|---|---:|---:|---|"]
    for row in memory_rows(footprint, MODES.values(), sizes=tuple(TARGETS), passes=passes):
        mode = MODES[row["mode"]]
        fits = [f"{size} px in {gib} GB" for size, gib in TARGETS.items() if row[size] <= gib * GIB]
        lines.append(f"| {mode.name} | {fidelity(mode)} | {row[512] / GIB:.1f} | {row[1024] / GIB:.1f} | {', '.join(fits)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=1, help="guidance passes run together (1: identity's default)")
    args = parser.parse_args(argv)
    from pipeline.generation.memory_table import flux_footprint

    text = tables(flux_footprint(), args.passes)
    print(text)
    return text


if __name__ == "__main__":
    main()
