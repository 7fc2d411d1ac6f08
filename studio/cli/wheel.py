"""`dsd wheel STAGE`: the data wheel, one stage per command (see pipeline/wheel/stages.py).

Each stage's flags are its settings' fields (`studio.job_settings`); the Data wheel tab starts the same
command as a job.
"""

import argparse

from studio.job_settings import (
    WHEEL_STAGES,
    CaptionsStage,
    CurateStage,
    ExportStage,
    GridsStage,
    ImportStage,
    PairsStage,
    PromptsStage,
    StageSettings,
    add_stage_group,
)


def add_commands(commands, common: argparse.ArgumentParser, job: argparse.ArgumentParser) -> None:
    add_stage_group(commands, "wheel", "make training pairs: captions to curated pairs", WHEEL_STAGES, common, job)


def run_wheel(args) -> int:
    from pipeline.jobs import JobReporter
    from pipeline.store import Store, data_home
    from pipeline.wheel.stages import StageResult, record_run

    store = Store(data_home(getattr(args, "home", None)))
    reporter = JobReporter(store, args.job)
    with reporter.finishing():
        result = run_stage(store, WHEEL_STAGES[args.stage].from_args(args), reporter)
        if isinstance(result, StageResult):
            record_run(store, result, args.job)
            reporter.stopped = result.stopped
    print(result.summary() if isinstance(result, StageResult) else result)
    return 0


def run_stage(store, stage: StageSettings, reporter):
    """Run one stage: a `StageResult` for the stages that make rows, a sentence for the others."""
    from pipeline.images import parse_size
    from pipeline.wheel import dataset
    from pipeline.wheel import stages as wheel
    from studio.resolve import resolve_captions, resolve_judge, resolve_teacher, resolve_writer, teacher_steps

    match stage:
        case CaptionsStage():
            default = None if stage.source else resolve_captions(stage.limit)
            return wheel.run_captions(store, stage.source, stage.limit, stage.column, stage.filter_with, default)
        case PromptsStage():
            return wheel.run_prompts(store, resolve_writer(stage.writer), stage.layout, stage.limit, stage.dedupe,
                                     reporter)
        case GridsStage():
            teacher, size, name = resolve_teacher(stage.teacher, parse_size(stage.size) if stage.size else None)
            steps = teacher_steps(stage.teacher) if stage.steps is None else stage.steps
            return wheel.run_grids(store, teacher, stage.per_prompt, size, steps, stage.guidance, stage.limit,
                                   reporter, name)
        case PairsStage():
            return wheel.run_pairs(store, stage.limit, reporter)
        case CurateStage():
            return wheel.run_curate(store, resolve_judge(stage.judge), stage.concurrency, stage.limit, reporter,
                                    stage.usd_per_mtok)
        case ExportStage():
            count = dataset.export_pairs(store, stage.out, stage.caption_style, stage.reviewed_only)
            return f"{count} pairs written to {stage.out}"
        case ImportStage():
            return f"{dataset.import_pairs(store, stage.file)} pairs imported from {stage.file}"
    return wheel.describe_stats(wheel.wheel_stats(store))
