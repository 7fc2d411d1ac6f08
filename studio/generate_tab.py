"""The Generate tab: a reference picture and a prompt in, new pictures of the same subject out.

Layout and event wiring only. Every generation goes through `pipeline.generation.generate.generate`, the
function the CLI and the tests call, with the request the form means (`studio.forms.generation_request`);
what it shows (results, history) comes from `studio.views`. API names: `generate`, `history`, `run_weights`,
`model_defaults`, `world_prompt`, `stop`.
"""

from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr
from PIL import Image

from mini import EXAMPLES_DIR, world
from mini.embedded import CHANGES, EXAMPLES, is_miniature, world_prompt
from pipeline.generation import generate as service
from pipeline.generation.caching import CACHE_CHOICES
from pipeline.generation.generate import Settings
from pipeline.generation.modes import MEMORY_MODES, MODES, get_mode
from pipeline.generation.weights import DTYPES, ModelSpec, sampling_defaults
from pipeline.store import Store
from studio.forms import generation_request, model_spec
from studio.resolve import request_notices, resolve_model
from studio.public import Visitors, uploaded_picture
from studio.shared import selected_id, shown_as_gr_error
from studio.views import HISTORY_HEADERS, gallery_items, generation_details, header, history_rows, timings_text
from train import launcher

PHOTO_EXAMPLES = [
    (EXAMPLES_DIR / "cat.jpg", "identity", MODES["identity"].example),
    (EXAMPLES_DIR / "coffee.jpg", "relight", MODES["relight"].example),
    (EXAMPLES_DIR / "astronaut.jpg", "instruct", MODES["instruct"].example),
]
# The embedded miniature knows only its world (held-out creatures here, so these are zero-shot) and its words.
MINI_EXAMPLES = [(example.path, example.mode, example.prompt) for example in EXAMPLES]


# a model's defaults


def examples_for(spec: ModelSpec) -> list[list[str]]:
    """The examples the model `spec` can draw: the miniature's creatures in its words, or FLUX's photos."""
    examples = MINI_EXAMPLES if is_miniature(spec) else PHOTO_EXAMPLES
    return [[str(path), mode, prompt] for path, mode, prompt in examples]


def example_prompt(mode: str, spec: ModelSpec) -> str:
    """The Prompt field's placeholder for `mode`: on the miniature its example in the world's words (a FLUX
    prompt is one it cannot draw), else the mode's own."""
    if is_miniature(spec):
        return next(prompt for _, example_mode, prompt in MINI_EXAMPLES if example_mode == mode)
    return get_mode(mode).example


def size_info(sampling: dict) -> str:
    return f"its own: {size_text(sampling)}; or W or WIDTHxHEIGHT, multiples of 16"


def size_text(sampling: dict) -> str:
    """A model's own size as the Size field writes it: 512, or 512x768."""
    width, height = sampling["width"], sampling["height"]
    return str(width) if width == height else f"{width}x{height}"


# a mode's defaults, as component updates


def mode_defaults(mode: str, spec: ModelSpec):
    """The hint, the example prompt (for the model `spec`) and the guidance defaults of a mode, as component updates."""
    preset = get_mode(mode)
    return (
        gr.Markdown(preset.hint),
        gr.Textbox(placeholder=example_prompt(mode, spec)),
        gr.Slider(value=preset.image_guidance),
        gr.Slider(value=preset.text_guidance),
    )


# layout


def form(settings: Settings, public: bool = False) -> SimpleNamespace:
    """The inputs, in the order `generate` takes them; in public mode without the Model panel (the model,
    memory mode and precision are the owner's settings, never a visitor's)."""
    first = MODES["identity"]
    model = resolve_model(settings.model)
    sampling = sampling_defaults(model)  # the model's own size and steps (512 px and 28 for FLUX)
    f = SimpleNamespace()
    f.reference = gr.Image(label="Reference picture", type="filepath", height=320, elem_id="reference")
    f.mode = gr.Radio([(m.label, m.name) for m in MODES.values()], value=first.name, label="Mode", elem_id="mode")
    f.hint = gr.Markdown(first.hint, elem_id="mode-hint")
    f.prompt = gr.Textbox(label="Prompt", placeholder=example_prompt(first.name, model), lines=3, elem_id="prompt")
    # Without the Model panel (public mode) the model cannot change: the words only for the miniature.
    f.words = world_words(is_miniature(model)) if not public or is_miniature(model) else None
    with gr.Row():
        f.size = gr.Textbox(size_text(sampling), label="Size", info=size_info(sampling), elem_id="size")
        f.steps = gr.Slider(1, 100, value=sampling["steps"], step=1, label="Steps", elem_id="steps")
        f.num_images = gr.Slider(1, 8, value=1, step=1, label="Pictures", elem_id="num-images")
    with gr.Row():
        f.seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="seed")
        f.randomise = gr.Checkbox(True, label="Random seed", elem_id="randomise")
    with gr.Accordion("Guidance and options", open=False):
        f.guidance = gr.Slider(0, 10, value=3.5, step=0.1, label="Guidance (distilled)")
        f.image_guidance = gr.Slider(0, 5, value=first.image_guidance, step=0.1, label="Image guidance")
        f.text_guidance = gr.Slider(0, 10, value=first.text_guidance, step=0.1, label="Text guidance")
        f.guidance_steps = gr.Textbox("all", label="Guidance steps", elem_id="guidance-steps",
                                      info="the steps that run image and text guidance: all; release (the authors' "
                                           "schedule, from the third step, image guidance above 1 only); or START:END "
                                           "as shares (0.1:0.8) or step numbers (2:28)")
        f.cache = gr.Dropdown(list(CACHE_CHOICES), value="none", allow_custom_value=True, label="Step cache",
                              elem_id="cache", info="reuses work between steps: faster, a little different; "
                                                    "NAME:VALUE sets its threshold, interval or range. Fast preset: "
                                                    "taylorseer:3 with guidance steps 0:0.5")
        f.fit = gr.Radio(["crop", "pad"], value="crop", label="Fit the reference to the panel")
        f.keep_reconstruction = gr.Checkbox(False, label="Also keep the reconstruction (left panel)")
        f.enhance = gr.Checkbox(False, label="Enhance the prompt",
                                info=f"with {settings.enhancer}" if settings.enhancer else "set DSD_ENHANCER to use it")
    f.memory = f.base = f.dsd = f.run = f.lora = f.dtype = None
    if public:
        return f
    with gr.Accordion("Model", open=False):
        f.memory = gr.Dropdown(list(MEMORY_MODES), value=settings.memory, label="Memory mode",
                               info="auto picks for the GPU it finds; on a 16 GB card int8_offload, on 12 GB group_offload")
        f.base = gr.Textbox(settings.model.base or "", label="Base model", placeholder="blank: the embedded miniature; a FLUX.1-dev folder or hub id")
        f.dsd = gr.Textbox(settings.model.dsd or "", label="DSD weights", placeholder="none; a folder or hub id")
        f.run = gr.Dropdown([], value=None, label="Or the weights of a training run", elem_id="generate-run",
                            info="fills Base model and DSD weights")
        f.lora = gr.Textbox(settings.model.lora or "", label="Extra LoRA", placeholder="none; a .safetensors file")
        f.dtype = gr.Dropdown(["auto", *DTYPES], value=settings.model.dtype, label="Precision")
    return f


def world_words(visible: bool = True) -> SimpleNamespace:
    """The miniature's own words as choices beside the prompt: it draws only what its world names."""
    w = SimpleNamespace()
    with gr.Accordion("Words the miniature knows (it draws 64 px creatures of its own world)", open=True,
                      visible=visible, elem_id="words") as w.panel:
        with gr.Row():
            w.scene = gr.Dropdown(list(world.SCENES), value="desert", label="Scene", elem_id="words-scene")
            w.light = gr.Dropdown(list(world.LIGHTS), value="left", label="Light from", elem_id="words-light")
            w.warmth = gr.Dropdown(list(world.WARMTHS), value="warm", label="Warmth", elem_id="words-warmth")
            w.change = gr.Dropdown([("nothing (identity, relight)", "")] + CHANGES, value="",
                                   label="Change (instruct)", elem_id="words-change")
        w.write = gr.Button("Write the prompt", size="sm", elem_id="words-write")
    return w


def opened_on_first() -> gr.Gallery:
    """A gallery that shows its first picture whole: its grid scales a single picture to the box's width and cuts
    it at the box's height (a 64 px creature lost its body until clicked); the preview fits it in the box."""
    return gr.Gallery(selected_index=0)


def results() -> SimpleNamespace:
    r = SimpleNamespace()
    r.gallery = gr.Gallery(label="Generated", columns=2, height=420, object_fit="contain", elem_id="gallery")
    r.seeds = gr.Textbox(label="Seeds used", interactive=False, elem_id="seeds")
    r.notices = gr.Textbox(label="Notices", interactive=False, elem_id="notices")
    r.timings = gr.Textbox(label="Timings", interactive=False, elem_id="timings")
    return r


def history_panel() -> SimpleNamespace:
    h = SimpleNamespace()
    gr.Markdown("### History")
    with gr.Row():
        h.search = gr.Textbox(placeholder="search prompts", show_label=False, scale=4, elem_id="history-search")
        h.refresh = gr.Button("Refresh", scale=1, elem_id="history-refresh")
    h.table = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, wrap=True, max_height=360,
                           elem_id="history")
    with gr.Row():
        h.pictures = gr.Gallery(label="Selected generation", columns=2, height=300, object_fit="contain",
                                elem_id="history-pictures")
        h.details = gr.JSON(label="Parameters", elem_id="history-details")
    return h


# wiring


def build(settings: Settings, title: gr.Markdown, gpu_wrapper: Callable | None = None, public: bool = False) -> None:
    """Lay out the tab inside the current Blocks and wire its events; `title` is the studio's header, whose
    model line follows the Model panel. In public mode (`studio.public`) each visitor sees and stops only their
    own generations, and may have one waiting or running."""
    store = Store(settings.home)
    visitors = Visitors() if public else None
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            f = form(settings, public)
            with gr.Row():
                button = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
        with gr.Column(scale=1):
            r = results()
    examples = gr.Examples(examples_for(resolve_model(settings.model)), inputs=[f.reference, f.mode, f.prompt],
                           cache_examples=False, elem_id="examples")
    h = history_panel()

    generate_fn = gpu_wrapper(service.generate) if gpu_wrapper else service.generate
    inputs = [f.reference, f.prompt, f.mode, f.size, f.steps, f.num_images, f.seed, f.randomise, f.guidance,
              f.image_guidance, f.text_guidance, f.fit, f.keep_reconstruction, f.enhance, f.guidance_steps, f.cache]
    mode_outputs = [f.hint, f.prompt, f.image_guidance, f.text_guidance]
    if public:  # the studio's model, which a visitor cannot change
        f.mode.change(lambda mode: mode_defaults(mode, resolve_model(settings.model)), f.mode, mode_outputs,
                      queue=False, api_visibility="private")
    else:
        f.mode.change(lambda mode, *fields: mode_defaults(mode, resolve_model(model_spec(*fields))),
                      [f.mode, f.base, f.dsd, f.lora, f.dtype], mode_outputs, queue=False, api_visibility="private")
    history = history_handler(store, visitors)
    # The public `history` endpoint is registered first so that it gets that name.
    h.refresh.click(history, h.search, h.table, api_name="history")
    outputs = [r.gallery, r.seeds, r.notices, r.timings]
    if public:  # visitors take turns inside the handler (`Visitors`), so Gradio may start them all
        generated = button.click(public_generate_handler(settings, generate_fn, visitors), inputs, outputs,
                                 api_name="generate", preprocess=False, concurrency_limit=None)
    else:
        generated = button.click(generate_handler(settings, generate_fn),
                                 inputs + [f.memory, f.base, f.dsd, f.lora, f.dtype], outputs, api_name="generate",
                                 preprocess=False)
    generated.then(history, h.search, h.table, api_visibility="private")
    generated.success(opened_on_first, None, r.gallery, queue=False, api_visibility="private")
    # Outside the queue, so it runs while a generation holds it; the generation keeps what it made.
    stop.click(stop_handler(visitors), None, None, queue=False, api_name="stop")
    # No triggers: on page load and whenever the search text changes.
    gr.on(None, history, h.search, h.table, api_visibility="private", trigger_mode="always_last")
    h.table.select(select_handler(store, visitors), None, [h.pictures, h.details], api_visibility="private").success(
        opened_on_first, None, h.pictures, queue=False, api_visibility="private")
    if public:
        return
    f.run.focus(lambda: gr.Dropdown(choices=launcher.runs_with_weights(store)), None, f.run, queue=False,
                api_visibility="private")
    f.run.select(run_weights_handler(store), f.run, [f.base, f.dsd], api_name="run_weights")
    # A run picked, or a field typed: the header, Size, Steps, examples and words follow the model.
    model_fields = [f.base, f.dsd, f.lora, f.dtype]
    gr.on([f.base.change, f.dsd.change, f.lora.change], model_defaults_handler(settings), model_fields,
          [title, f.size, f.steps], queue=False, api_name="model_defaults", trigger_mode="always_last").success(
        model_examples, [f.mode, *model_fields], [examples.dataset, f.words.panel, f.prompt, f.size], queue=False,
        api_visibility="private")
    if f.words:
        f.words.write.click(world_prompt_handler, [f.words.scene, f.words.light, f.words.warmth, f.words.change],
                            f.prompt, queue=False, api_name="world_prompt")


def world_prompt_handler(scene: str, light: str, warmth: str, change: str = "") -> str:
    """A prompt in the miniature's words: the scene, the light and, for instruct, one change."""
    with shown_as_gr_error("writing the prompt"):
        return world_prompt(scene, light, warmth, change or None)


def model_defaults_handler(settings: Settings):
    def model_defaults(base: str = "", dsd: str = "", lora: str = "", dtype: str = "auto"):
        """The studio's header and the Size and Steps for the model the Model fields name: its own size and
        steps (its sampling.json; FLUX's 512 px and 28 steps without one)."""
        with shown_as_gr_error("reading the model's defaults"):
            chosen = replace(settings, model=model_spec(base, dsd, lora, dtype))
            sampling = sampling_defaults(resolve_model(chosen.model))
        return header(chosen), size_text(sampling), sampling["steps"]

    return model_defaults


def model_examples(mode: str, base: str, dsd: str, lora: str, dtype: str):
    """The examples, the word choices, the prompt's placeholder and the size's hint for the model the Model
    fields name."""
    model = resolve_model(model_spec(base, dsd, lora, dtype))
    return (gr.Dataset(samples=examples_for(model)), gr.Accordion(visible=is_miniature(model)),
            gr.Textbox(placeholder=example_prompt(mode, model)), gr.Textbox(info=size_info(sampling_defaults(model))))


def run_weights_handler(store: Store):
    def run_weights(run_id: int):
        """The Model fields (base, DSD weights) for a training run's final weights."""
        with shown_as_gr_error("picking the run"):
            return launcher.run_model_fields(store, run_id)

    return run_weights


def run_generation(settings: Settings, generate_fn: Callable, form_values: tuple, progress) -> tuple:
    """The form's values -> a generation -> what the results panel shows (pictures, seeds, notices, timings)."""
    request = generation_request(*form_values)
    notices = request_notices(settings.model, request)
    progress(0, desc="loading the model")
    result = generate_fn(request, settings, notices=notices,
                         progress=lambda step, total: progress((step, total), desc="denoising"))
    for notice in result.notices:
        gr.Warning(notice)
    return result, ", ".join(str(seed) for seed in result.seeds), "\n".join(result.notices), timings_text(result.timings)


def generate_handler(settings: Settings, generate_fn: Callable):
    def generate(reference, prompt, mode, size, steps, num_images, seed, randomise, guidance,
                 image_guidance, text_guidance, fit, keep_reconstruction, enhance, guidance_steps, cache,
                 memory, base, dsd, lora, dtype, progress=gr.Progress()):
        """Generate pictures of the reference's subject; returns pictures, seeds, notices, timings."""
        with shown_as_gr_error("generation"):
            chosen = replace(settings, memory=memory, model=resolve_model(model_spec(base, dsd, lora, dtype)))
            values = (uploaded_picture(reference), prompt, mode, size, steps, num_images, seed, randomise, guidance,
                      image_guidance, text_guidance, fit, keep_reconstruction, enhance, guidance_steps, cache)
            result, *shown = run_generation(chosen, generate_fn, values, progress)
        return gallery_items(result), *shown

    return generate


def public_generate_handler(settings: Settings, generate_fn: Callable, visitors: Visitors):
    settings = replace(settings, model=resolve_model(settings.model))

    def generate(reference, prompt, mode, size, steps, num_images, seed, randomise, guidance,
                 image_guidance, text_guidance, fit, keep_reconstruction, enhance, guidance_steps, cache,
                 request: gr.Request, progress=gr.Progress()):
        """Generate pictures of the reference's subject (an uploaded picture) with the studio's model;
        returns pictures, seeds, notices, timings."""
        with shown_as_gr_error("generation"):
            values = (uploaded_picture(reference), prompt, mode, size, steps, num_images, seed, randomise, guidance,
                      image_guidance, text_guidance, fit, keep_reconstruction, enhance, guidance_steps, cache)
            progress(0, desc="waiting for the GPU")
            with visitors.generating(request.session_hash):
                result, *shown = run_generation(settings, generate_fn, values, progress)
            visitors.made(request.session_hash, result.id)
        # Pictures, not paths: Gradio serves them from its cache by content hash, never from the data folder.
        return [(Image.open(path), label) for path, label in gallery_items(result)], *shown

    return generate


def stop_handler(visitors: Visitors | None):
    def stop(request: gr.Request) -> None:
        """Stop the running generation after its current denoising step (in public mode: only one's own)."""
        if visitors is None or visitors.running == request.session_hash:
            service.MODELS.stop()

    return stop


def history_handler(store: Store, visitors: Visitors | None = None):
    def history(search: str = "", request: gr.Request = None):
        """Recent generations, newest first; `search` keeps prompts that contain it (public mode: one's own)."""
        with shown_as_gr_error("reading the history"):
            return history_rows(store, search, visitors.generations(request.session_hash) if visitors else None)

    return history


def select_handler(store: Store, visitors: Visitors | None = None):
    def select(event: gr.SelectData, request: gr.Request):
        with shown_as_gr_error("reading the history"):
            return generation_details(store, selected_id(event),
                                      visitors.generations(request.session_hash) if visitors else None)

    return select
