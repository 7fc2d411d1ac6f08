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
from pipeline.generation.modes import MEMORY_MODES, MODES
from studio.cli.mini import add_mini_commands, run_mini


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, like every other bad input here."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (default: the embedded miniature, teacher + curated student)")
    group.add_argument("--base", help="FLUX.1-dev folder or hub id (env DSD_BASE)")
    group.add_argument("--dsd", help="DSD weights: primecai/dsd_model layout or a training run folder (env DSD_WEIGHTS)")
    group.add_argument("--lora", help="one more LoRA file (env DSD_LORA)")
    group.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], help="(env DSD_DTYPE, default auto)")
    group.add_argument("--memory", choices=MEMORY_MODES, help="GPU memory mode (env DSD_MEMORY, default auto)")
    group.add_argument("--run", type=int, help="a training run's final weights on its base (instead of --base/--dsd)")


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
    gen.add_argument("--size", help="panel size W or WxH, multiples of 16 (default: the model's, 512 for FLUX)")
    gen.add_argument("--steps", type=int, help="sampling steps (default: the model's, 28 for FLUX)")
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
    add_mini_commands(commands, common, OneLineParser)
    add_train_commands(commands, common)
    add_eval_commands(commands, common)
    return parser


def add_eval_commands(commands, common: argparse.ArgumentParser) -> None:
    """`dsd eval sample|judge|metrics|report`: the DreamBench++ protocol (see pipeline/evaluation/stages.py)."""
    evaluation = commands.add_parser("eval", parents=[common], help="evaluate a model: DreamBench++ judge, CLIP/DINO")
    stages = evaluation.add_subparsers(dest="stage", required=True, parser_class=OneLineParser)
    sample = stages.add_parser("sample", parents=[common], help="generate one (or K) picture per benchmark prompt")
    sample.add_argument("--name", required=True, help="the evaluation's name (continues it if it exists)")
    sample.add_argument("--benchmark", help="a DreamBench++ folder (default: the built-in 4-subject set)")
    sample.add_argument("--base", help="FLUX.1-dev folder (default: the embedded model)")
    sample.add_argument("--dsd", help="DSD weights folder")
    sample.add_argument("--run", type=int, help="a training run's weights instead of --base/--dsd")
    sample.add_argument("--per-prompt", type=int, default=1)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--size", type=int, default=512)
    sample.add_argument("--steps", type=int, default=28)
    sample.add_argument("--limit", type=int, help="at most this many new pictures now (resume later)")
    judge = stages.add_parser("judge", parents=[common], help="a VLM scores CP and PF, 3 runs by default")
    judge.add_argument("evaluation", help="evaluation name or id")
    judge.add_argument("--judge-url", help="OpenAI-compatible endpoint (key from OPENAI_API_KEY)")
    judge.add_argument("--judge-model", help="model name at --judge-url")
    judge.add_argument("--judge", dest="judge_spec", help="gemini:MODEL (key from GEMINI_API_KEY) or openai:MODEL")
    judge.add_argument("--runs", type=int, default=3)
    judge.add_argument("--concurrency", type=int, default=4)
    judge.add_argument("--templates", help="a DreamBench++ checkout (or template folder) for its exact prompts")
    metrics = stages.add_parser("metrics", parents=[common], help="CLIP-I, CLIP-T and DINO from local checkpoints")
    metrics.add_argument("evaluation")
    metrics.add_argument("--clip", help="folder of openai/clip-vit-base-patch32")
    metrics.add_argument("--dino", help="folder of facebook/dino-vits8")
    metrics.add_argument("--dinov2", help="folder of facebook/dinov2-small")
    report = stages.add_parser("report", parents=[common], help="the figures: JSON, CSV or a Table 1 in Markdown")
    report.add_argument("evaluation")
    report.add_argument("--json", action="store_true", help="print the figures as JSON")
    report.add_argument("--csv", type=Path, help="also write every judgement to this CSV file")
    report.add_argument("--partial", action="store_true", help="report even with missing or failed items (says so)")
    report.add_argument("--runs", type=int, help="judge runs expected (default: those judged)")
    for stage in (sample, judge, metrics, report):
        stage.add_argument("--job", type=int, help=argparse.SUPPRESS)  # set by the studio's job launcher


def run_eval(args) -> int:
    import json

    from pipeline.evaluation import stages as evaluation
    from pipeline.jobs import JobReporter
    from pipeline.store import Store, data_home

    store = Store(data_home(getattr(args, "home", None)))
    reporter = JobReporter(store, getattr(args, "job", None))
    try:
        run_eval_stage(args, store, evaluation, json, reporter)
    except UserInputError as error:
        reporter.finish("failed", str(error))
        raise
    except KeyboardInterrupt:
        reporter.finish("stopped" if reporter.should_stop() else "failed", "interrupted")
        raise
    except BaseException as error:
        reporter.finish("failed", f"{type(error).__name__}: {error}")
        raise
    reporter.finish("done")
    return 0


def run_eval_stage(args, store, evaluation, json, reporter) -> None:
    from studio.resolve import resolve_model

    progress = lambda done, total: reporter.progress(done, total, force=done == total)  # noqa: E731
    if args.stage == "sample":
        base, dsd = args.base, args.dsd
        if args.run is not None:
            from train.launcher import run_model_fields

            base, dsd = run_model_fields(store, args.run)
        eval_id = evaluation.create_eval(store, args.name, args.benchmark, base, dsd, args.run,
                                         args.per_prompt, args.seed, args.size, args.steps)
        model = resolve_model(evaluation.recorded_model(evaluation.get_eval(store, eval_id)))
        made = evaluation.sample_items(store, eval_id, args.limit, on_progress=progress, model=model)
        print(f"evaluation {eval_id} ({args.name}): {made} new pictures, "
              f"{store.count_eval_samples(eval_id)} in all")
    elif args.stage == "judge":
        judge = evaluation.judge_from_options(args.judge_url, args.judge_model, args.judge_spec)
        added = evaluation.judge_samples(store, args.evaluation, judge, args.runs, args.templates, args.concurrency,
                                         on_progress=progress)
        print(f"{added} judgements by {judge.name} at {judge.endpoint}")
    elif args.stage == "metrics":
        print(f"{evaluation.feature_metrics(store, args.evaluation, args.clip, args.dino, args.dinov2)} metric values")
    else:
        result = evaluation.report(store, args.evaluation, args.runs, allow_partial=args.partial)
        if args.csv:
            evaluation.write_csv(store, args.evaluation, args.csv)
        print(json.dumps(result, indent=1) if args.json else evaluation.markdown_table(result))


def add_train_commands(commands, common: argparse.ArgumentParser) -> None:
    """`dsd train`: the fine-tune in the foreground, or runs launched, stopped and resumed as jobs."""
    source = argparse.ArgumentParser(add_help=False)
    picked = source.add_mutually_exclusive_group()
    picked.add_argument("--config", type=Path, help="a YAML file of train.config.TrainConfig settings")
    picked.add_argument("--preset", help="a preset by name: cpu-smoke, 1x-h100, 8x-h100-fsdp or one saved in the studio")
    source.add_argument("--data", help="training pairs (parquet), instead of the config's")
    training = commands.add_parser("train", parents=[common, source], help="fine-tune a DSD LoRA (foreground without an action)")
    actions = training.add_subparsers(dest="action", parser_class=OneLineParser)
    launch = actions.add_parser("launch", parents=[common, source], help="start a run in the background (queued if its devices are busy)")
    launch.add_argument("--gpus", help="GPU ids, e.g. 0,1 (one process each); 'cpu' for CPU processes")
    launch.add_argument("--processes", type=int, help="processes (default: the config's)")
    launch.add_argument("--name", default="")
    for action, text in (("stop", "save a checkpoint and stop"), ("save", "save a checkpoint now"),
                         ("sample", "draw samples now"), ("resume", "continue a stopped or failed run")):
        actions.add_parser(action, parents=[common], help=text).add_argument("run", help="run id")
    actions.add_parser("status", parents=[common], help="the runs: status, step, loss, time left").add_argument(
        "run", nargs="?", help="one run in detail")


def train_config(args):
    from pipeline.store import data_home
    from studio.resolve import resolve_config
    from train.config import TrainConfig, load_preset

    if args.config:
        config = TrainConfig.from_yaml(args.config)
    elif args.preset:
        config = load_preset(args.preset, data_home(getattr(args, "home", None)))
    else:
        raise UserInputError("give --config FILE.yaml or --preset NAME")
    if args.data:
        config = replace(config, data=str(Path(args.data).resolve()))
    config = resolve_config(config)
    if getattr(args, "gpus", None):
        devices = args.gpus.strip()
        processes = 1 if devices.lower() == "cpu" else len(devices.split(","))
        config = replace(config, devices=devices, processes=args.processes or processes)
    elif getattr(args, "processes", None):
        config = replace(config, processes=args.processes)
    config.validate()
    return config


def run_train(args) -> int:
    from pipeline.store import Store, data_home, utc_now
    from train import launcher

    store = Store(data_home(getattr(args, "home", None)))
    action = args.action
    if action is None:  # the foreground: this process is the run
        from train.worker import execute

        run_id = launcher.create_run(store, train_config(args), status="running", pid=os.getpid(),
                                     started_at=utc_now())
        print(f"run {run_id}", flush=True)
        execute(store, run_id)
        return 0
    if action == "launch":
        run_id = launcher.launch(store, train_config(args), args.name)
        run = launcher.get_run(store, run_id)
        print(f"run {run_id} {run['status']}" + (f": {launcher.command_line(run)}" if run["args"] else
                                                 " (waiting for its devices)"))
        return 0
    if action in launcher.REQUESTS:
        print(launcher.request(store, args.run, action))
        return 0
    if action == "resume":
        from studio.resolve import DEFAULT_BASE

        run = launcher.get_run(store, launcher.resume(store, args.run, default_base=DEFAULT_BASE))
        print(f"run {run['id']} {run['status']}")
        return 0
    launcher.reconcile(store)
    runs = [launcher.get_run(store, args.run)] if args.run else store.runs(limit=50)
    print(f"{'run':>4}  {'status':8}  {'step':>13}  {'loss':>8}  {'left':>7}  devices  name")
    for run in runs:
        row = launcher.run_summary(store, run)
        loss = f"{row['loss']:.4f}" if row["loss"] is not None else ""
        print(f"{row['id']:>4}  {row['status']:8}  {row['step']:>6}/{row['steps']:<6}  {loss:>8}  {row['eta']:>7}  "
              f"{row['devices']:7}  {row['name']}" + (f"  ({row['error']})" if row["error"] else ""))
    if args.run:
        print(f"command: {launcher.command_line(runs[0]) or '(foreground)'}\nlog: {runs[0]['log_path'] or ''}")
    return 0


def add_wheel_commands(commands, common: argparse.ArgumentParser) -> None:
    """`dsd wheel STAGE`: the data wheel, one stage per command (see pipeline/wheel/stages.py)."""
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
    grids.add_argument("--size", help="grid size W[xH] (default 1024, 144 for the embedded miniature)")
    grids.add_argument("--steps", type=int, default=28)
    grids.add_argument("--guidance", type=float, default=3.5)
    grids.add_argument("--limit", type=int)

    pairs = stages.add_parser("pairs", parents=[job], help="cut grids into panels and compose pairs")
    pairs.add_argument("--limit", type=int)

    curate = stages.add_parser("curate", parents=[job], help="a VLM judges and captions every pair")
    curate.add_argument("--judge", help=f"VLM: {provider_help}; offline is an image-similarity stand-in; "
                        "mini:FOLDER is the miniature's attribute judge")
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
    from pipeline.wheel import dataset
    from pipeline.wheel import stages as wheel
    from pipeline.images import parse_size
    from pipeline.jobs import JobReporter
    from pipeline.store import Store, data_home
    from studio.resolve import resolve_judge, resolve_teacher, resolve_writer

    store = Store(data_home(getattr(args, "home", None)))
    reporter = JobReporter(store, args.job)

    def grids():
        teacher, size, name = resolve_teacher(args.teacher, parse_size(args.size) if args.size else None)
        return wheel.run_grids(store, teacher, args.per_prompt, size, args.steps, args.guidance, args.limit, reporter, name)

    stages = {
        "captions": lambda: wheel.run_captions(store, args.source, args.limit, args.column, args.filter_with),
        "prompts": lambda: wheel.run_prompts(store, resolve_writer(args.writer), args.layout, args.limit, args.dedupe,
                                             reporter),
        "grids": grids,
        "pairs": lambda: wheel.run_pairs(store, args.limit, reporter),
        "curate": lambda: wheel.run_curate(store, resolve_judge(args.judge), args.concurrency, args.limit, reporter,
                                           args.usd_per_mtok),
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
    from pipeline.generation.generate import Settings

    flag = lambda name: getattr(args, name, None)  # noqa: E731 (not every command has the model flags)
    settings = Settings.from_env(home=Path(args.home) if flag("home") else None, memory=flag("memory"))
    model = settings.model
    if flag("run") is not None:
        if flag("base") or flag("dsd"):
            raise UserInputError("--run brings its own base and weights: leave out --base and --dsd")
        model = run_model(settings.home, flag("run"), model)
    return replace(settings, model=replace(
        model, base=flag("base") or model.base, dsd=flag("dsd") or model.dsd,
        lora=flag("lora") or model.lora, dtype=flag("dtype") or model.dtype,
    ))


def run_model(home: Path, run_id: int, model):
    """The model spec of a training run: its base and its final weights."""
    from pipeline.store import Store
    from train import launcher

    base, weights = launcher.run_model_fields(Store(home), run_id)
    return replace(model, base=base or None, dsd=weights)


def run_generate(args) -> int:
    from pipeline.images import parse_size
    from pipeline.generation.generate import GenerateRequest, generate
    from studio.resolve import resolve_model

    if args.out.suffix.lower() != ".png":
        raise UserInputError(f"--out {args.out}: write a .png file (PNG keeps the generation parameters)")
    width, height = parse_size(args.size) if args.size else (None, None)
    request = GenerateRequest(
        image=args.image, prompt=args.prompt, mode=args.mode, width=width, height=height, steps=args.steps,
        seed=args.seed, num_images=args.num_images, guidance=args.guidance, image_guidance=args.image_guidance,
        text_guidance=args.text_guidance, fit=args.fit, keep_reconstruction=args.keep_reconstruction,
        enhance=args.enhance,
    )
    settings = settings_from(args)
    result = generate(request, replace(settings, model=resolve_model(settings.model)), out=args.out)
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
        commands = {"generate": run_generate, "studio": run_studio, "wheel": run_wheel, "train": run_train,
                    "eval": run_eval, "mini": run_mini}
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

