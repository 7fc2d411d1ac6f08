"""What the studio and the command line fill in before the method runs: the edge's choices.

The method (`pipeline/`, `train/`) takes ready objects and named folders. A user who names no model,
teacher, judge or prompt writer gets the studio's defaults, chosen here: the embedded miniature, its
teacher at its own grid size and steps, prompt templates that know the miniature's world, and the
miniature's attribute judge. A `mini:FOLDER` judge is a miniature's attribute judge; any other spec is a
provider's (`pipeline.providers`). What the miniature cannot draw as asked (a photo, a word or a size outside
its world) is said here, as notices the generation carries.
"""

from pathlib import Path

from mini import JUDGE, TEACHER
from mini.embedded import GRID_SIZE, TEACHER_NAME, with_embedded
from pipeline.errors import UserInputError
from pipeline.generation.weights import ModelSpec, sampling_defaults

MINI_JUDGE = "mini:"
DEFAULT_JUDGE = f"{MINI_JUDGE}{JUDGE}"  # the wheel's default teacher draws the miniature's world: its own judge
DEFAULT_BASE = str(TEACHER)  # what a run without a base fine-tunes, and the base of one recorded without
FLUX_GRID = (1024, 1024)
WORLD_CAPTIONS, WORLD_CAPTION_COUNT = "miniature world", 500


def resolve_model(spec: ModelSpec) -> ModelSpec:
    """The model a generation, evaluation or training run uses: blanks are the embedded miniature."""
    return with_embedded(spec)


def resolve_config(config):
    """A training config whose blank base is the embedded model's (the miniature's teacher)."""
    from dataclasses import replace

    return config if config.base else replace(config, base=DEFAULT_BASE)


def resolve_teacher(teacher: str | None, size: tuple[int, int] | None) -> tuple[str, tuple[int, int], str | None]:
    """(teacher folder or hub id, grid size, the name grids record) for the grid stage."""
    if teacher:
        return teacher, size or FLUX_GRID, None
    return str(TEACHER), size or GRID_SIZE, TEACHER_NAME


def teacher_steps(teacher: str | None) -> int:
    """The denoising steps a teacher is made for (its folder's `sampling.json`, else FLUX's 28); blank is the
    embedded miniature's teacher."""
    return sampling_defaults(ModelSpec(base=teacher or str(TEACHER)))["steps"]


def request_notices(spec: ModelSpec, request) -> list[str]:
    """What to tell a user about a `GenerateRequest` the model `spec` will not draw as asked. The miniature
    says when the reference is not of its world, when the prompt has words it does not know, and when the size
    is not its own; the generation still runs."""
    from mini.embedded import is_miniature, prompt_notice, size_notice

    if not is_miniature(spec):
        return []
    own = sampling_defaults(spec)
    size = (request.width or own["width"], request.height or own["height"])  # blank: the model's own
    notices = [_reference_notice(request.image), prompt_notice(request.prompt or ""),
               size_notice(size, (own["width"], own["height"]))]
    return [notice for notice in notices if notice]


def _reference_notice(image) -> str | None:
    from mini.embedded import reference_notice
    from pipeline.images import load_image

    try:
        return reference_notice(load_image(image))
    except UserInputError:
        return None  # a picture that cannot be read: the generation refuses it with its own message


def resolve_captions(limit: int | None) -> tuple[str, list[str]]:
    """The captions a wheel starts from without a caption file: the embedded miniature's world (captions of
    its training creatures), which its teacher can draw; a seeded list, so a larger limit extends a smaller."""
    from mini.recipe import wheel_captions

    return WORLD_CAPTIONS, wheel_captions(limit or WORLD_CAPTION_COUNT)


def resolve_judge(spec: str | None):
    """The curator of `--judge` (and of the Data wheel tab's Judge field, which is checked with this): blank is
    the embedded miniature's attribute judge, `mini:FOLDER` another miniature judge, `offline` the image-similarity
    stand-in, and a provider spec a VLM. A spec that names no judge, a missing key or a folder without a judge
    is one clear error."""
    from pipeline.providers import SPEC_FORMS
    from pipeline.wheel.curation import make_curator

    spec = (spec or "").strip() or DEFAULT_JUDGE
    if spec.startswith(MINI_JUDGE):
        from mini.judge import AttributeCurator

        return AttributeCurator.from_pretrained(Path(spec.removeprefix(MINI_JUDGE).strip()).expanduser())
    if spec.partition(":")[0] not in {form.partition(":")[0] for form in SPEC_FORMS}:
        forms = ", ".join(("blank (the embedded miniature's judge)", f"{MINI_JUDGE}FOLDER", *SPEC_FORMS))
        raise UserInputError(f"unknown judge {spec!r}: use {forms}")
    return make_curator(spec)


def resolve_writer(spec: str | None):
    """The prompt writer of `--writer`: an LLM's, or offline templates that know the miniature's world."""
    from mini.prompts import WorldPromptWriter
    from pipeline.providers import OfflineProvider, make_provider
    from pipeline.wheel.prompts import make_prompt_writer

    provider = make_provider(spec) if spec else None
    if provider is None or isinstance(provider, OfflineProvider):
        return WorldPromptWriter()
    return make_prompt_writer(provider)
