"""`dsd mini STAGE`: the method in miniature (`mini/`), one stage per command, or all of them.

    dsd mini train-teacher --out W/teacher   [--recipe copy: issue 14's teacher, 4x VAE, saved every 250 steps]
    dsd mini train-judge   --teacher W/teacher --out W/judge
    dsd mini wheel         --teacher W/teacher --judge W/judge --home W/wheel
    dsd mini train-student --teacher W/teacher --data W/wheel/curated.parquet --out W/student/curated
    dsd mini report        [--teacher ... --judge ... --uncurated ... --curated ...] [--json]
    dsd mini teacher-domain --home W/domain   (the same students on the teacher's own pictures)
    dsd mini chain         --out W [--recipe copy]  (all of the above, in order, with their CPU times)

Every stage is seeded; `report` defaults to the weights shipped in assets/mini. `train-teacher` and
`train-judge` on a folder that already holds a model continue it (a further round: new pictures with
another --seed, and for the teacher a lower --lr). A teacher training stopped after a `--save-every` save
resumes from that save, exactly, when the same command is run again.
"""

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from pipeline.errors import UserInputError

RECIPE_NAMES = ("shipped", "copy")  # mini.teacher.RECIPES' names, without importing torch for --help


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    mini = commands.add_parser("mini", parents=[common], help="the whole method in miniature, on a CPU")
    stages = mini.add_subparsers(dest="stage", required=True)
    teacher = stages.add_parser("train-teacher", parents=[common], help="VAE + tiny FLUX text-to-image of the world")
    teacher.add_argument("--out", type=Path, required=True)
    teacher.add_argument("--recipe", choices=RECIPE_NAMES, default="shipped",
                         help="shipped: the shipped teacher's; copy: issue 14's teacher that copies a given subject")
    teacher.add_argument("--steps", type=int, help="transformer steps (the recipe's: 4000 shipped, 10000 copy)")
    teacher.add_argument("--vae-steps", type=int, help="VAE steps (the recipe's: 4000 shipped, 3000 copy)")
    teacher.add_argument("--images", type=int, help="rendered pictures of each kind (the recipe's: 4000 shipped, 6000 copy)")
    teacher.add_argument("--lr", type=float, help="transformer learning rate (default 1e-3; lower for a further round)")
    teacher.add_argument("--save-every", type=int, help="save the folder every N steps; rerun to resume (default: at the end)")
    teacher.add_argument("--text-encoders", type=Path, metavar="TEACHER",
                         help="start from this trained teacher's text encoders, frozen (as FLUX's pretrained ones are)")
    teacher.add_argument("--seed", type=int, help="the recipe's: 0 shipped, 10 copy")

    judge = stages.add_parser("train-judge", parents=[common], help="the attribute judge: curator and instrument")
    judge.add_argument("--teacher", type=Path, required=True, help="its VAE degrades some training panels")
    judge.add_argument("--out", type=Path, required=True)
    judge.add_argument("--steps", type=int, default=8000)
    judge.add_argument("--count", type=int, default=24000, help="rendered training panels")
    judge.add_argument("--seed", type=int, default=0)

    wheel = stages.add_parser("wheel", parents=[common], help="the data wheel with the teacher and judge")
    wheel.add_argument("--teacher", type=Path, required=True)
    wheel.add_argument("--judge", type=Path, required=True)
    wheel.add_argument("--grids", type=int, default=240)
    wheel.add_argument("--steps", type=int, default=20, help="sampling steps per grid")
    wheel.add_argument("--seed", type=int, default=0)
    wheel.add_argument("--processes", type=int, default=1, help="processes drawing grids side by side (one per core)")

    student = stages.add_parser("train-student", parents=[common], help="the project's trainer on wheel pairs")
    student.add_argument("--teacher", type=Path, required=True)
    student.add_argument("--data", type=Path, required=True, help="a wheel export (curated.parquet or uncurated.parquet)")
    student.add_argument("--out", type=Path, required=True)
    student.add_argument("--steps", type=int, default=1500)
    student.add_argument("--seed", type=int, default=0)

    report = stages.add_parser("report", parents=[common], help="CP, PF, CP*PF of the four rows on held-out identities")
    add_model_folders(report)
    report.add_argument("--seeds", type=int, default=3)
    report.add_argument("--per-mode", type=int, default=16, help="items per mode and seed")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--picture", type=Path, help="also write references and outputs side by side (PNG)")

    domain = stages.add_parser("teacher-domain", parents=[common],
                               help="identity kept on the teacher's own pictures, from captions no student saw")
    add_model_folders(domain)
    domain.add_argument("--grids", type=int, default=100, help="fresh grids drawn for the check")
    domain.add_argument("--seeds", type=int, default=3)

    chain = stages.add_parser("chain", parents=[common], help="every stage in order into one folder")
    chain.add_argument("--out", type=Path, required=True)
    chain.add_argument("--quick", action="store_true", help="a few steps per stage: checks a set-up in minutes")
    chain.add_argument("--recipe", choices=RECIPE_NAMES, default="shipped", help="the teacher's (see train-teacher)")


def add_model_folders(parser) -> None:
    from mini import JUDGE, STUDENT, TEACHER

    parser.add_argument("--teacher", type=Path, default=TEACHER)
    parser.add_argument("--judge", type=Path, default=JUDGE)
    parser.add_argument("--uncurated", type=Path, default=STUDENT / "uncurated", help="student trained on random judged pairs, as many as curated")
    parser.add_argument("--curated", type=Path, default=STUDENT / "curated", help="student trained on curated pairs")


def need(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise UserInputError(f"no {what} at {path}: {hint}")
    return path


def run_mini(args) -> int:
    from mini import recipe
    from mini.report import markdown, run_report
    from mini.teacher import RECIPES, train_teacher
    from mini.teacher_domain import teacher_domain

    say = lambda message: print(message, flush=True)  # noqa: E731
    if args.stage == "train-teacher":
        overrides = {k: v for k, v in (("steps", args.steps), ("vae_steps", args.vae_steps), ("images", args.images),
                                       ("lr", args.lr), ("save_every", args.save_every)) if v is not None}
        if args.text_encoders is not None:
            overrides |= {"text_encoders": str(args.text_encoders), "train_text": False}
        if args.seed is not None:
            overrides["seed"] = args.seed
        settings, config = RECIPES[args.recipe]
        report = train_teacher(args.out, replace(settings, **overrides), log=say, config=config)
    elif args.stage == "train-judge":
        need(args.teacher / "vae", "teacher", "train one with `dsd mini train-teacher`")
        report = recipe.train_judge_stage(args.teacher, args.out, args.count, args.steps, args.seed, log=say)
    elif args.stage == "wheel":
        need(args.teacher / "transformer", "teacher", "train one with `dsd mini train-teacher`")
        need(args.judge / "config.json", "judge", "train one with `dsd mini train-judge`")
        home = Path(getattr(args, "home", None) or "dsd-data/mini-wheel")
        report = recipe.run_wheel(home, args.teacher, args.judge, args.grids, args.steps, args.seed, log=say,
                                  processes=args.processes)
    elif args.stage == "train-student":
        need(args.teacher / "transformer", "teacher", "train one with `dsd mini train-teacher`")
        need(args.data, "training pairs", "export them with `dsd mini wheel`")
        report = recipe.train_student(args.teacher, args.data, args.out, args.steps, args.seed, log=say)
    elif args.stage == "report":
        for folder, what in ((args.teacher, "teacher"), (args.judge, "judge"), (args.uncurated, "student"),
                             (args.curated, "student")):
            need(folder, what, "run `dsd mini chain --out DIR` or pass the folders")
        report = run_report(args.teacher, args.judge, {"student_uncurated": args.uncurated,
                                                       "student_curated": args.curated},
                            args.seeds, args.per_mode, picture=args.picture, log=say if not args.json else lambda m: None)
        if not args.json:
            print(markdown(report))
            return 0
    elif args.stage == "teacher-domain":
        home = Path(getattr(args, "home", None) or "dsd-data/mini-teacher-domain")
        report = teacher_domain(home, args.teacher, args.judge, {"student_uncurated": args.uncurated,
                                                                 "student_curated": args.curated},
                                args.grids, seeds=args.seeds, log=say)
    else:
        report = run_chain(args.out, args.quick, say, args.recipe)
    print(json.dumps(report, indent=1))
    return 0


def run_chain(out: Path, quick: bool, say, teacher_recipe: str = "shipped") -> dict:
    """Every stage into `out`, timing each; `quick` shrinks every stage to check a set-up."""
    from mini import recipe
    from mini.report import run_report
    from mini.teacher import RECIPES, train_teacher

    settings, config = RECIPES[teacher_recipe]
    settings = replace(settings, vae_steps=20, steps=20, images=64) if quick else settings
    times = {}

    def timed(name, call):
        started = time.perf_counter()
        result = call()
        times[name] = round(time.perf_counter() - started)
        say(f"== {name}: {times[name]} s")
        return result

    timed("train-teacher", lambda: train_teacher(out / "teacher", settings, log=say, config=config))
    timed("train-judge", lambda: recipe.train_judge_stage(out / "teacher", out / "judge", 256 if quick else 24000,
                                                          20 if quick else 8000, log=say))
    timed("wheel", lambda: recipe.run_wheel(out / "wheel", out / "teacher", out / "judge", 4 if quick else 240,
                                            4 if quick else 20, log=say, processes=min(2, os.cpu_count() or 1)))
    for name in ("uncurated", "curated"):
        timed(f"train-student-{name}", lambda: recipe.train_student(out / "teacher", out / "wheel" / f"{name}.parquet",
                                                                    out / "student" / name, 10 if quick else 1500,
                                                                    log=say))
    report = timed("report", lambda: run_report(out / "teacher", out / "judge",
                                                {f"student_{n}": out / "student" / n for n in ("uncurated", "curated")},
                                                per_mode=2 if quick else 16, steps=4 if quick else 20, log=say))
    return {**report, "stage_seconds": times}
