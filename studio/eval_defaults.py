"""What an evaluation leaves blank, filled in at the edge for the Evaluate tab and `dsd eval` alike.

`pipeline.evaluation` takes ready values and never imports the miniature, so the choices are made here: a
blank size and steps are the model's own (`sampling_defaults`: 512 px and 28 steps for FLUX, 64 and 20 for
the embedded miniature); on a model of the miniature's world a blank benchmark is its world benchmark (the
held-out items of `dsd mini report`, written once into the data folder), and a blank judge for a benchmark
in the world's words is the miniature's attribute judge. Messages name the tab's fields or the command's
flags, whichever the user is looking at.
"""

from pathlib import Path

from pipeline.errors import UserInputError

# Inside the data folder, named by the items' version: a folder is written once and kept, so an older data
# folder's copy (v1: references placed across the whole world, before they were centred) is never read as this one.
WORLD_BENCHMARK = Path("benchmarks") / "miniature-world-v2"
JUDGE_FLAGS = {"url": "--judge-url", "model": "--judge-model", "spec": "--judge"}
JUDGE_FIELDS = {"url": "Judge URL", "model": "Judge model", "spec": "Or judge"}  # the Evaluate tab's labels


def default_evaluation_name(settings) -> str:
    """The Evaluate tab's first name, so that Sample, Judge and Results work on the first press: the model's."""
    from mini.embedded import is_miniature
    from studio.resolve import resolve_model

    return "miniature" if is_miniature(resolve_model(settings.model)) else "dsd"


def sample_defaults(home: Path, base: str | None, dsd: str | None, benchmark: str | None, size: int | None,
                    steps: int | None) -> tuple[str | None, int, int]:
    """(benchmark folder, size, steps) of an evaluation of `base` and `dsd` (blank: the embedded model); a
    blank benchmark stays None (the built-in photo set) unless the model draws the miniature's world."""
    from mini.benchmark import write_benchmark
    from mini.embedded import is_miniature
    from pipeline.generation.weights import ModelSpec, sampling_defaults
    from studio.resolve import resolve_model

    spec = resolve_model(ModelSpec(base=base, dsd=dsd))
    own = sampling_defaults(spec)
    if not benchmark and is_miniature(spec):
        benchmark = str(write_benchmark(Path(home) / WORLD_BENCHMARK))
    return benchmark, size or own["width"], steps or own["steps"]


def chosen_judge(url: str | None, model: str | None, spec: str | None, templates: str | None = None,
                 names: dict = JUDGE_FLAGS):
    """The judge a user named, built (so a missing key or judge folder is refused now), or None when all is
    blank: an OpenAI-compatible `url` and `model`, a provider `spec`, or `mini:FOLDER` (a miniature's attribute
    judge)."""
    from mini.benchmark import AttributeJudge
    from pipeline.evaluation.stages import judge_from_options
    from studio.resolve import MINI_JUDGE

    if spec and spec.startswith(MINI_JUDGE) and not (url or model):
        return AttributeJudge.from_pretrained(Path(spec.removeprefix(MINI_JUDGE).strip()).expanduser())
    if url or model:
        if not (url and model):
            raise UserInputError(f"an OpenAI-compatible judge needs both {names['url']} and {names['model']}")
        return judge_from_options(url, model, None, templates)
    return judge_from_options(None, None, spec, templates) if spec else None


def evaluation_judge(evaluation: dict, url: str | None, model: str | None, spec: str | None,
                     templates: str | None = None, names: dict = JUDGE_FLAGS):
    """The judge of `evaluation`: the one a user named (`chosen_judge`); all blank, the embedded miniature's
    attribute judge for a benchmark in its world's words, and for any other one a message that says which
    fields to fill in."""
    from mini import JUDGE
    from mini.benchmark import AttributeJudge, is_world_benchmark

    judge = chosen_judge(url, model, spec, templates, names)
    if judge:
        return judge
    if is_world_benchmark(evaluation["benchmark"]):
        return AttributeJudge.from_pretrained(JUDGE)
    raise UserInputError(
        f"choose a judge for evaluation {evaluation['name']!r}: {names['url']} and {names['model']} (an "
        f"OpenAI-compatible endpoint; key OPENAI_API_KEY), or {names['spec']} gemini:MODEL (key GEMINI_API_KEY). "
        "Left blank, the judge is the miniature's attribute judge, which judges only its world's benchmark")


def judge_failure(error: Exception, url_judge: bool, names: dict = JUDGE_FLAGS) -> str:
    """A judge stage's failure (`JudgeFailed`) in the words of the fields that set the judge: the provider says
    "the base URL" and "the model name"; the user sees Judge URL and Judge model (or --judge-url ...)."""
    fields = (names["url"], names["model"]) if url_judge else (names["spec"], names["spec"])
    text = str(error).replace("the base URL", fields[0]).replace("the model name", fields[1])
    if not any(field in text for field in fields):
        text = f"{text.rstrip('.')}. Check {' and '.join(dict.fromkeys(fields))}, then judge again"
    return text
