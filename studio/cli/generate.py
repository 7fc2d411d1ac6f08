"""`dsd generate` (reference picture + prompt -> pictures) and `dsd studio` (the studio in the browser)."""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.errors import UserInputError
from pipeline.generation.modes import MEMORY_MODES, MODES


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (default: the embedded miniature, teacher + curated student)")
    group.add_argument("--base", help="FLUX.1-dev folder or hub id (env DSD_BASE)")
    group.add_argument("--dsd", help="DSD weights: primecai/dsd_model layout or a training run folder (env DSD_WEIGHTS)")
    group.add_argument("--lora", help="one more LoRA file (env DSD_LORA)")
    group.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], help="(env DSD_DTYPE, default auto)")
    group.add_argument("--memory", choices=MEMORY_MODES, metavar="MODE",
                       help=f"memory mode, one of {', '.join(MEMORY_MODES)}; auto picks for the GPU it finds "
                            "(env DSD_MEMORY, default auto; the README's memory table says what each needs)")
    group.add_argument("--run", type=int, help="a training run's final weights on its base (instead of --base/--dsd)")


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    studio = commands.add_parser("studio", parents=[common], help="start the studio in the browser")
    studio.add_argument("--host", default="127.0.0.1")
    studio.add_argument("--port", type=int, default=7860)
    studio.add_argument("--public", action="store_true",
                        help="public mode (generation only, from uploads; per-visitor history and Stop); on by "
                             "default on a Space or a non-loopback --host unless DSD_PASSWORD is set")
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
    gen.add_argument("--guidance", type=float, default=3.5, help="FLUX distilled guidance, 0 to 30 (default 3.5)")
    gen.add_argument("--image-guidance", type=float, help="true image guidance, 0 to 30; 1 is off (default: the mode's)")
    gen.add_argument("--text-guidance", type=float, help="true text guidance, 0 to 30; 1 is off (default: the mode's)")
    gen.add_argument("--guidance-steps", metavar="START:END",
                     help="the steps that run true guidance: shares (0.1:0.8) or step numbers (2:28, end excluded); "
                          "'release' is the authors' schedule, bit for bit (default: all)")
    gen.add_argument("--cache", metavar="NAME[:VALUE]",
                     help="step cache: fbc[:threshold], taylorseer[:interval], mag[:threshold] or pab[:range] "
                          "(diffusers' hooks; default none)")
    gen.add_argument("--fit", choices=["crop", "pad"], default="crop", help="how the reference fills the panel")
    gen.add_argument("--keep-reconstruction", action="store_true", help="also write the left half as OUT.reconstruction.png")
    gen.add_argument("--enhance", action="store_true", help="rewrite the prompt with the provider in DSD_ENHANCER")
    add_model_flags(gen)


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
    from pipeline.generation.generate import GenerateRequest, generate
    from pipeline.images import parse_size
    from studio.resolve import request_notices, resolve_model

    if args.out.suffix.lower() != ".png":
        raise UserInputError(f"--out {args.out}: write a .png file (PNG keeps the generation parameters)")
    width, height = parse_size(args.size) if args.size else (None, None)
    request = GenerateRequest(
        image=args.image, prompt=args.prompt, mode=args.mode, width=width, height=height, steps=args.steps,
        seed=args.seed, num_images=args.num_images, guidance=args.guidance, image_guidance=args.image_guidance,
        text_guidance=args.text_guidance, fit=args.fit, keep_reconstruction=args.keep_reconstruction,
        enhance=args.enhance, guidance_steps=args.guidance_steps, cache=args.cache,
    )
    settings = settings_from(args)
    model = resolve_model(settings.model)
    result = generate(request, replace(settings, model=model), out=args.out,
                      notices=request_notices(model, request))
    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    for path, seed in zip(result.paths, result.seeds):
        print(f"{path}\tseed {seed}")
    print(f"{result.timings['total_s']:.1f} s, history id {result.id}", file=sys.stderr)
    return 0


def run_studio(args) -> int:
    from studio.app import launch

    launch(settings_from(args), host=args.host, port=args.port, public=args.public)
    return 0
