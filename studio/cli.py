"""The `dsd` command line: the same plain functions as the studio, for scripts and other tools.

Exit codes: 0 success; 2 bad input (one line on stderr, no traceback); 1 a provider or other
runtime failure (one line).
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.errors import UserInputError
from pipeline.modes import MODES
from pipeline.service import MEMORY_MODES


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
    common.add_argument("--home", help="data folder for the database, pictures and runs (env DSD_HOME, default ./dsd-data)")
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
    return parser


def settings_from(args):
    """Flags override the environment (`Settings.from_env`), which overrides the defaults."""
    from pipeline.service import Settings

    settings = Settings.from_env(home=Path(args.home) if args.home else None, memory=args.memory)
    model = settings.model
    return replace(settings, model=replace(
        model, base=args.base or model.base, dsd=args.dsd or model.dsd,
        lora=args.lora or model.lora, dtype=args.dtype or model.dtype,
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
    """Library progress bars and warnings are not for CLI users; our own notices say what matters."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return {"generate": run_generate, "studio": run_studio}[args.command](args)
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
