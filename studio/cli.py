"""The `dsd` command line: the same plain functions as the studio, for scripts and other tools.

Exit codes: 0 success; 2 bad input (one line on stderr, no traceback); 1 a provider or other
runtime failure (one line).
"""

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.errors import UserInputError
from pipeline.modes import MEMORY_MODES, MODES


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, like every other bad input here."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (default: the embedded tiny model)")
    group.add_argument("--base", help="FLUX.1-dev folder or hub id (env DSD_BASE)")
    group.add_argument("--dsd", help="DSD weights: primecai/dsd_model layout or a training run folder (env DSD_WEIGHTS)")
    group.add_argument("--lora", help="one more LoRA file (env DSD_LORA)")
    group.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], help="(env DSD_DTYPE, default auto)")
    group.add_argument("--memory", choices=MEMORY_MODES, help="GPU memory mode (env DSD_MEMORY, default auto)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's own --home default must not hide one given before the subcommand.
    common.add_argument("--home", default=argparse.SUPPRESS,
                        help="data folder for the database, pictures and runs (env DSD_HOME, default ./dsd-data)")
    parser = OneLineParser(prog="dsd", description="DSD Studio: zero-shot identity-preserving generation.", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    studio = commands.add_parser("studio", parents=[common], help="start the studio in the browser")
    studio.add_argument("--host", default="127.0.0.1")
    studio.add_argument("--port", type=int, default=7860)
    add_model_flags(studio)

    gen = commands.add_parser("generate", parents=[common], help="reference picture + prompt -> picture(s)")
    gen.add_argument("--image", required=True, help="reference picture")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True, type=Path, help="OUT.png; more pictures go to OUT-1.png, OUT-2.png, ...")
    gen.add_argument("--mode", choices=list(MODES), default="identity")
    gen.add_argument("--size", default="512", help="panel size W or WxH, multiples of 16 (default 512)")
    gen.add_argument("--steps", type=int, default=28)
    gen.add_argument("--seed", type=int, help="default: random, printed")
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument("--guidance", type=float, default=3.5, help="FLUX distilled guidance (default 3.5)")
    gen.add_argument("--image-guidance", type=float, help="true image guidance (default: the mode's)")
    gen.add_argument("--text-guidance", type=float, help="true text guidance (default: the mode's)")
    gen.add_argument("--fit", choices=["crop", "pad"], default="crop", help="how the reference fills the panel")
    gen.add_argument("--keep-reconstruction", action="store_true", help="also write the left half as OUT.reconstruction.png")
    gen.add_argument("--enhance", action="store_true", help="rewrite the prompt with the provider in DSD_ENHANCER")
    add_model_flags(gen)
    add_wheel_commands(commands, common)
    training = commands.add_parser("train", parents=[common], help="fine-tune a DSD LoRA in the foreground")
    training.add_argument("--config", required=True, type=Path, help="a YAML file of train.config.TrainConfig settings")
    return parser


def run_train(args) -> int:
    from pipeline.store import data_home
    from train.config import TrainConfig
    from train.trainer import train

    config = TrainConfig.from_yaml(args.config)

    def report(metrics: dict) -> None:
        if metrics["step"] % config.log_every == 0 or metrics["step"] == config.steps:
            print(f"step {metrics['step']}/{config.steps}  loss {metrics['loss']:.4f}  "
                  f"(reference {metrics['loss_reference']:.4f}, target {metrics['loss_target']:.4f})  lr {metrics['lr']:.2e}",
                  flush=True)

    print(f"weights written to {train(config, data_home(getattr(args, 'home', None)), on_metrics=report)}")
    return 0


def add_wheel_commands(commands, common: argparse.ArgumentParser) -> None:
    """`dsd wheel STAGE`: the data wheel, one stage per command (see pipeline/wheel.py)."""
    job = argparse.ArgumentParser(add_help=False, parents=[common])
    job.add_argument("--job", type=int, help=argparse.SUPPRESS)  # set by the studio's job launcher
    wheel = commands.add_parser("wheel", parents=[common], help="make training pairs: captions to curated pairs")
    stages = wheel.add_subparsers(dest="stage", required=True, parser_class=OneLineParser)
    provider_help = "offline (default), openai:MODEL[@BASE_URL] or gemini:MODEL"

    captions = stages.add_parser("captions", parents=[job], help="load reference captions")
    captions.add_argument("--from", dest="source", help="txt, csv, jsonl or parquet file (default: the built-in set)")
    captions.add_argument("--column", help="caption column of a csv/jsonl/parquet file (default: caption or text)")
    captions.add_argument("--limit", type=int)
    captions.add_argument("--filter", dest="filter_with", help=f"keep captions with a clear subject, judged by {provider_help}")

    prompts = stages.add_parser("prompts", parents=[job], help="captions -> grid prompts")
    prompts.add_argument("--writer", help=f"LLM: {provider_help}")
    prompts.add_argument("--layout", default="2x2", help="2x2 (default), 1x2, 2x3 or 3x3")
    prompts.add_argument("--dedupe", type=float, default=0.8, help="near-duplicate similarity threshold (default 0.8)")
    prompts.add_argument("--limit", type=int)

    grids = stages.add_parser("grids", parents=[job], help="the teacher draws grids (use accelerate launch for GPUs)")
    grids.add_argument("--teacher", help="text-to-image folder or hub id (default: the embedded model)")
    grids.add_argument("--per-prompt", type=int, default=1, help="grids per prompt, each at its own recorded seed")
    grids.add_argument("--size", help="grid size W[xH] (default 1024, 256 for the embedded model)")
    grids.add_argument("--steps", type=int, default=28)
    grids.add_argument("--guidance", type=float, default=3.5)
    grids.add_argument("--limit", type=int)

    pairs = stages.add_parser("pairs", parents=[job], help="cut grids into panels and compose pairs")
    pairs.add_argument("--limit", type=int)

    curate = stages.add_parser("curate", parents=[job], help="a VLM judges and captions every pair")
    curate.add_argument("--judge", help=f"VLM: {provider_help}; offline is an image-similarity stand-in")
    curate.add_argument("--concurrency", type=int, default=4)
    curate.add_argument("--limit", type=int)
    curate.add_argument("--usd-per-mtok", type=float, nargs=2, metavar=("INPUT", "OUTPUT"),
                        help="prices per million tokens, to record the run's cost")

    export = stages.add_parser("export", parents=[job], help="accepted pairs to parquet (primecai/dsd_data layout)")
    export.add_argument("--out", required=True, type=Path)
    export.add_argument("--caption-style", choices=["target", "instruction"], default="target")
    export.add_argument("--reviewed-only", action="store_true", help="only pairs a person accepted")

    imports = stages.add_parser("import", parents=[job], help="add the pairs of a DSD-style parquet file")
    imports.add_argument("file", type=Path)

    stages.add_parser("stats", parents=[job], help="counts per stage, hit and acceptance rates")


def run_wheel(args) -> int:
    from pipeline import dataset, wheel
    from pipeline.images import parse_size
    from pipeline.jobs import JobReporter
    from pipeline.store import Store, data_home

    store = Store(data_home(getattr(args, "home", None)))
    reporter = JobReporter(store, args.job)
    stages = {
        "captions": lambda: wheel.run_captions(store, args.source, args.limit, args.column, args.filter_with),
        "prompts": lambda: wheel.run_prompts(store, args.writer, args.layout, args.limit, args.dedupe, reporter),
        "grids": lambda: wheel.run_grids(store, args.teacher, args.per_prompt, parse_size(args.size) if args.size else None,
                                         args.steps, args.guidance, args.limit, reporter),
        "pairs": lambda: wheel.run_pairs(store, args.limit, reporter),
        "curate": lambda: wheel.run_curate(store, args.judge, args.concurrency, args.limit, reporter, args.usd_per_mtok),
        "export": lambda: f"{dataset.export_pairs(store, args.out, args.caption_style, args.reviewed_only)} pairs written to {args.out}",
        "import": lambda: f"{dataset.import_pairs(store, args.file)} pairs imported from {args.file}",
        "stats": lambda: wheel.describe_stats(wheel.wheel_stats(store)),
    }
    try:
        result = stages[args.stage]()
    except UserInputError as error:
        reporter.finish("failed", str(error))
        raise
    except KeyboardInterrupt:  # the job launcher's backstop after an ignored stop request
        reporter.finish("stopped" if reporter.should_stop() else "failed", "interrupted")
        raise
    except BaseException as error:
        reporter.finish("failed", f"{type(error).__name__}: {error}")
        raise
    if isinstance(result, wheel.StageResult):
        wheel.record_run(store, result, args.job)
    reporter.finish("stopped" if getattr(result, "stopped", False) else "done")
    print(result.summary() if hasattr(result, "summary") else result)
    return 0


def settings_from(args):
    """Flags override the environment (`Settings.from_env`), which overrides the defaults."""
    from pipeline.service import Settings

    flag = lambda name: getattr(args, name, None)  # noqa: E731 (not every command has the model flags)
    settings = Settings.from_env(home=Path(args.home) if flag("home") else None, memory=flag("memory"))
    model = settings.model
    return replace(settings, model=replace(
        model, base=flag("base") or model.base, dsd=flag("dsd") or model.dsd,
        lora=flag("lora") or model.lora, dtype=flag("dtype") or model.dtype,
    ))


def run_generate(args) -> int:
    from pipeline.images import parse_size
    from pipeline.service import GenerateRequest, generate

    if args.out.suffix.lower() != ".png":
        raise UserInputError(f"--out {args.out}: write a .png file (PNG keeps the generation parameters)")
    width, height = parse_size(args.size)
    request = GenerateRequest(
        image=args.image, prompt=args.prompt, mode=args.mode, width=width, height=height, steps=args.steps,
        seed=args.seed, num_images=args.num_images, guidance=args.guidance, image_guidance=args.image_guidance,
        text_guidance=args.text_guidance, fit=args.fit, keep_reconstruction=args.keep_reconstruction,
        enhance=args.enhance,
    )
    result = generate(request, settings_from(args), out=args.out)
    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    for path, seed in zip(result.paths, result.seeds):
        print(f"{path}\tseed {seed}")
    print(f"{result.timings['total_s']:.1f} s, history id {result.id}", file=sys.stderr)
    return 0


def run_studio(args) -> int:
    from studio.app import launch

    launch(settings_from(args), host=args.host, port=args.port)
    return 0


def quiet_libraries() -> None:
    """Library progress bars and warnings are not for CLI users; our own notices say what matters.
    Environment variables, read when those libraries load: importing them here would slow every command."""
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        commands = {"generate": run_generate, "studio": run_studio, "wheel": run_wheel, "train": run_train}
        return commands[args.command](args)
    except UserInputError as error:
        print(f"dsd: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        from pipeline.providers import ProviderError

        if not isinstance(error, ProviderError):
            raise
        print(f"dsd: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
