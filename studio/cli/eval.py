"""`dsd eval sample|judge|metrics|report`: the DreamBench++ protocol (see pipeline/evaluation/stages.py).

Each stage's flags are its settings' fields (`studio.job_settings`); the Evaluate tab starts the same
command as a job.
"""

import argparse
import json

from studio.eval_defaults import JUDGE_FIELDS, JUDGE_FLAGS
from studio.job_settings import EVAL_STAGES, JudgeStage, MetricsStage, SampleStage, StageSettings, add_stage_group


def add_commands(commands, common: argparse.ArgumentParser, job: argparse.ArgumentParser) -> None:
    add_stage_group(commands, "eval", "evaluate a model: DreamBench++ judge, CLIP/DINO", EVAL_STAGES, common, job)


def run_eval(args) -> int:
    from pipeline.jobs import JobReporter
    from pipeline.store import Store, data_home

    store = Store(data_home(getattr(args, "home", None)))
    job = getattr(args, "job", None)
    reporter = JobReporter(store, job)
    with reporter.finishing():
        # A job was started by the Evaluate tab: its messages name the tab's fields, not the flags.
        print(run_stage(store, EVAL_STAGES[args.stage].from_args(args), reporter, JUDGE_FIELDS if job else JUDGE_FLAGS))
    return 0


def run_stage(store, stage: StageSettings, reporter, names: dict = JUDGE_FLAGS) -> str:
    """Run one stage; returns what it prints. `names`: how messages name the judge's fields."""
    from pipeline.errors import UserInputError
    from pipeline.evaluation import stages as evaluation
    from studio.eval_defaults import evaluation_judge, judge_failure
    from studio.resolve import resolve_model

    progress = lambda done, total: reporter.progress(done, total, force=done == total)  # noqa: E731
    match stage:
        case SampleStage():
            eval_id = stage.evaluation_id(store)
            model = resolve_model(evaluation.recorded_model(evaluation.get_eval(store, eval_id)))
            made = evaluation.sample_items(store, eval_id, stage.limit, on_progress=progress, model=model,
                                           should_stop=reporter.should_stop)
            reporter.stopped = reporter.should_stop()
            return (f"evaluation {eval_id} ({stage.name}): {made} new pictures, "
                    f"{store.count_eval_samples(eval_id)} in all")
        case JudgeStage():
            judge = evaluation_judge(evaluation.get_eval(store, stage.evaluation), stage.judge_url, stage.judge_model,
                                     stage.judge_spec, stage.templates, names)
            try:
                done = evaluation.judge_samples(store, stage.evaluation, judge, stage.runs, stage.concurrency,
                                                on_progress=progress)
            except evaluation.JudgeFailed as error:
                raise UserInputError(judge_failure(error, bool(stage.judge_url), names)) from None
            return done.summary(judge)
        case MetricsStage():
            values = evaluation.feature_metrics(store, stage.evaluation, stage.clip, stage.dino, stage.dinov2)
            return f"{values} metric values"
    result = evaluation.report(store, stage.evaluation, stage.runs, allow_partial=stage.partial)
    if stage.csv:
        evaluation.write_csv(store, stage.evaluation, stage.csv)
    return json.dumps(result, indent=1) if stage.json else evaluation.markdown_table(result)
