"""What the tabs' forms mean: their values as the settings objects the method and the jobs take.

Plain functions, no Gradio: each takes the values of a form's inputs (as a browser or an API caller sends
them: numbers may be floats or None, text may be blank) and returns the settings, checked, or raises one
UserInputError that names the bad field and says what to give instead. The Train tab's form, generated
from `TrainConfig`, is `studio.config_form`.
"""

import math
from pathlib import Path

from pipeline.errors import UserInputError
from pipeline.generation.generate import GenerateRequest
from pipeline.generation.weights import ModelSpec
from pipeline.images import parse_size
from pipeline.providers import make_provider
from pipeline.wheel.grids import Layout
from studio.eval_defaults import JUDGE_FIELDS, chosen_judge
from studio.job_settings import (
    CaptionsStage,
    CurateStage,
    GridsStage,
    JudgeStage,
    MetricsStage,
    PairsStage,
    PromptsStage,
    SampleStage,
    StageSettings,
)
from studio.resolve import MINI_JUDGE, resolve_judge

RUNNABLE_STAGES = ("captions", "prompts", "grids", "pairs", "curate")  # the wheel stages the tab starts


# values every form has


def _as_number(value) -> int | float | None:
    """A field's value as a number, None when it is none (blank, text, nan, inf). Ints stay ints: a seed
    near 2^63 would lose its last digits as a float."""
    if isinstance(value, str):
        text_value = value.strip()
        try:
            return int(text_value)
        except ValueError:
            try:
                value = float(text_value)
            except ValueError:
                return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


def whole_number(name: str, value, minimum: int = 1) -> int:
    """A whole number of at least `minimum`; 1.5 is refused, never truncated."""
    number = _as_number(value)
    if number is None or number != int(number) or int(number) < minimum:
        raise UserInputError(f"{name} {value!r}: give a whole number of at least {minimum}")
    return int(number)


def decimal_number(name: str, value) -> float:
    """A finite number; its range is the method's to check (`generate.check_request`)."""
    number = _as_number(value)
    if number is None:
        raise UserInputError(f"{name} {value!r}: give a number")
    return float(number)


def text(value) -> str | None:
    """A text box's value without its surrounding spaces; None when blank."""
    return (value or "").strip() or None


def existing_folder(name: str, value) -> str | None:
    """The absolute path of a folder that exists on the server; None for a blank field."""
    if not text(value):
        return None
    path = Path(text(value)).expanduser()
    if not path.is_dir():
        raise UserInputError(f"{name} folder {text(value)!r} does not exist on the server")
    return str(path.resolve())


def provider_spec(value) -> str | None:
    """A provider spec, once it is known to build a provider (its API key is there); None for a blank field."""
    spec = text(value)
    if spec:
        make_provider(spec)
    return spec


# the Generate tab


def model_spec(base: str | None, dsd: str | None, lora: str | None, dtype: str | None) -> ModelSpec:
    """The Model fields; an empty field is the default (the embedded base, no DSD weights, no LoRA)."""
    return ModelSpec(base=text(base), dsd=text(dsd), lora=text(lora), dtype=dtype or "auto")


def uploaded_path(reference) -> str | None:
    """The uploaded reference file, as the server stored it.

    The generate event skips gradio's preprocessing: `gr.Image` opens every upload with PIL first,
    so a broken file or a decompression bomb would fail there with a generic error. The raw value
    is the upload's file data (already checked to lie in gradio's upload folder); `load_image`
    then refuses bad pictures with a clear message.
    """
    return reference.get("path") if isinstance(reference, dict) else reference


def generation_request(reference, prompt, mode, size, steps, num_images, seed, randomise, guidance,
                     image_guidance, text_guidance, fit, keep_reconstruction, enhance,
                     guidance_steps=None, cache=None) -> GenerateRequest:
    """The request the Generate form means. Guidance steps and cache are text, checked by the request (a
    value of another type reaches it as given, to be refused in one message)."""
    as_text = lambda value: text(value) if value is None or isinstance(value, str) else value  # noqa: E731
    reference = uploaded_path(reference)
    if not reference:
        raise UserInputError("no reference picture: upload one (or pick an example below)")
    width, height = parse_size(size)
    if not randomise and seed in (None, ""):
        raise UserInputError("the seed is empty: type a whole number or tick 'random seed'")
    return GenerateRequest(
        image=reference, prompt=prompt or "", mode=mode, width=width, height=height, steps=whole_number("steps", steps),
        seed=None if randomise else whole_number("seed", seed, minimum=0),
        num_images=whole_number("pictures", num_images), guidance=decimal_number("guidance", guidance),
        image_guidance=decimal_number("image guidance", image_guidance),
        text_guidance=decimal_number("text guidance", text_guidance), fit=fit,
        keep_reconstruction=bool(keep_reconstruction), enhance=bool(enhance),
        guidance_steps=as_text(guidance_steps), cache=as_text(cache),
    )


# the Data wheel tab


def caption_file(value) -> str | None:
    if not text(value):
        return None
    source = Path(text(value)).expanduser()
    if not source.is_file():
        raise UserInputError(f"caption file {str(source)!r} does not exist on the server: give the path "
                             "of a txt, csv, jsonl or parquet file, or leave it blank for the built-in set")
    return str(source.resolve())


def judge_spec(value) -> str | None:
    """A wheel judge, once `resolve_judge` (what `dsd wheel curate` runs) builds it: the tab accepts exactly the
    specs the command line accepts, and refuses a missing key or judge folder before a job starts. A `mini:`
    folder is made absolute; blank is None, the default judge."""
    spec = text(value)
    resolve_judge(spec)
    if spec and spec.startswith(MINI_JUDGE):
        return MINI_JUDGE + str(Path(spec.removeprefix(MINI_JUDGE).strip()).expanduser().resolve())
    return spec


def wheel_stage(stage, limit=None, source="", writer="", layout="2x2", teacher="", per_prompt=1, size="",
                steps=None, judge="", concurrency=4) -> StageSettings:
    """The Run form as the settings of its stage; only the stage's own fields are read. Blank provider,
    teacher or judge fields mean the embedded default (the miniature's teacher and judge, offline templates),
    blank steps the teacher's own."""
    if stage not in RUNNABLE_STAGES:
        raise UserInputError(f"unknown stage {stage!r}: use one of {', '.join(RUNNABLE_STAGES)}")
    # A blank Number reaches the server as 0 from the browser (None only through the API): both mean no limit.
    limit = None if limit in (None, "", 0) else whole_number("limit", limit)
    if stage == "captions":
        return CaptionsStage(source=caption_file(source), limit=limit)
    if stage == "prompts":
        return PromptsStage(writer=provider_spec(writer), layout=str(Layout.parse(layout or "2x2")), limit=limit)
    if stage == "grids":
        return GridsStage(teacher=text(teacher), per_prompt=whole_number("grids per prompt", per_prompt),
                          steps=None if steps in (None, "") else whole_number("steps", steps),
                          size="{}x{}".format(*parse_size(text(size))) if text(size) else None, limit=limit)
    if stage == "pairs":
        return PairsStage(limit=limit)
    return CurateStage(judge=judge_spec(judge), concurrency=whole_number("concurrency", concurrency), limit=limit)


# the Evaluate tab


def evaluation_name(value) -> str:
    if not text(value):
        raise UserInputError("give the evaluation a name")
    return text(value)


def sample_stage(name, benchmark="", base="", dsd="", run=None, per_prompt=1, seed=0, size=None,
                 steps=None) -> SampleStage:
    """The Sample fields: a training run or base and DSD folders, and the sampling settings. A blank (or 0)
    training run is none; a blank size or steps is the model's own (`studio.eval_defaults`)."""
    name, benchmark = evaluation_name(name), existing_folder("benchmark", benchmark)
    if run not in (None, "", 0):
        if text(base) or text(dsd):
            raise UserInputError("a training run brings its own base and weights: leave the base and DSD fields blank")
        run, base, dsd = whole_number("training run", run), None, None
    else:
        run, base, dsd = None, existing_folder("base", base), existing_folder("dsd", dsd)
    seed = whole_number("seed", seed, minimum=0)
    per_prompt = whole_number("pictures per prompt", per_prompt)
    size = None if size in (None, "", 0) else whole_number("size", size, 16)  # the browser sends a blank as 0
    steps = None if steps in (None, "", 0) else whole_number("steps", steps)
    if size and size % 16:
        raise UserInputError(f"size {size}: give a multiple of 16, or leave it blank for the model's own")
    return SampleStage(name=name, benchmark=benchmark, base=base, dsd=dsd, run=run, per_prompt=per_prompt,
                       seed=seed, size=size, steps=steps)


def judge_stage(name, judge_url="", judge_model="", judge_spec="", runs=3, concurrency=4) -> JudgeStage:
    """The Judge fields: an OpenAI-compatible URL and model, or a spec (`mini:FOLDER` included), built once here
    so a missing key or half a judge is refused before a job starts. All blank is the evaluation's default
    judge, which the tab checks (`studio.eval_defaults.evaluation_judge`) once it knows the evaluation."""
    url, model, spec = text(judge_url), text(judge_model), text(judge_spec)
    chosen_judge(url, model, spec, names=JUDGE_FIELDS)  # a missing key or half a judge: refused before a job starts
    return JudgeStage(evaluation=evaluation_name(name), judge_url=url, judge_model=model,
                      judge_spec=None if url else spec, runs=whole_number("runs", runs),
                      concurrency=whole_number("concurrency", concurrency))


def metrics_stage(name, clip="", dino="", dinov2="") -> MetricsStage:
    stage = MetricsStage(evaluation=evaluation_name(name), clip=existing_folder("clip", clip),
                         dino=existing_folder("dino", dino), dinov2=existing_folder("dinov2", dinov2))
    if not (stage.clip or stage.dino or stage.dinov2):
        raise UserInputError("give at least one checkpoint folder: CLIP, DINO or DINOv2")
    return stage
