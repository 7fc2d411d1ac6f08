"""The Train tab: a training run's settings, its launch, and what it reports while it trains.

Layout and event wiring only. A run is an `accelerate launch` process of its own (`train.launcher`),
so it survives page reloads; the tab shows what `studio.views` reads from the store, on a timer. The form is generated from
`TrainConfig`'s fields (`studio.config_form`), so every knob of a run is here, and the API takes them by name.
API names: `train_start`, `train_stop`, `train_save`, `train_sample`, `train_resume`, `train_runs`,
`train_preset_load`, `train_preset_save`.
"""

import inspect
from dataclasses import Field, replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from pipeline.errors import UserInputError
from pipeline.generation.generate import Settings
from pipeline.store import Store
from studio.config_form import CHOICES, FIELD_NAMES, FIELDS, config_from_form, field_kind, form_values, is_number_box
from studio.resolve import DEFAULT_BASE, resolve_config
from studio.shared import inside_data_folder, selected_id, shown_as_gr_error
from studio.views import RUN_HEADERS, run_rows, run_view
from train import launcher
from train.config import TrainConfig, load_preset, preset_names, save_preset

DEFAULT_PRESET = "cpu-smoke"  # runs on any machine: a first-time user can press Start
FORM_COLUMNS = 8
HINTS = {
    "data": "a parquet file on the server, as `dsd wheel export` writes",
    "base": "blank: the embedded miniature teacher; a FLUX.1-dev folder or hub id",
    "out": "blank: runs/<run id> in the data folder",
    "alpha": "blank: the rank",
    "target_modules": "YAML list of module name patterns",
    "half_weights": "[reference, target]",
    "samples": "YAML list of {image: PATH, prompt: TEXT}; []: the first training pairs",
    "devices": "blank: the first GPUs, or the CPU; cpu; or GPU ids 0,1",
}


# what the API takes


def named_after_fields(fn, *leading: str):
    """Name `fn`'s inputs (`*leading`, then one per config field) so that API callers pass them by
    name; a field left out takes the form's default (the cpu-smoke preset)."""
    fn.__signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                                          for name in (*leading, *FIELD_NAMES)])
    return fn


def chosen_run(store: Store, run_id, statuses: tuple[str, ...], action: str) -> dict:
    """Run `run_id`, or when it is blank (or 0, what an untouched number box sends) the newest run in one of
    `statuses`."""
    if run_id:
        return launcher.get_run(store, run_id)
    found = [run for run in store.runs() if run["status"] in statuses]
    if not found:
        raise UserInputError(f"no {' or '.join(statuses)} training run: nothing to {action}")
    return found[0]


# layout


def config_inputs(config: TrainConfig) -> list:
    """An input per config field, showing `config`, in field order; lists (YAML text) go last, a row each."""
    values = dict(zip(FIELD_NAMES, form_values(config)))

    def field_input(f: Field):
        kind, _ = field_kind(f)
        common = dict(label=f.name.replace("_", " ").capitalize(), elem_id=f"train-field-{f.name.replace('_', '-')}",
                      min_width=100)
        if f.name in CHOICES:
            return gr.Dropdown(list(CHOICES[f.name]), value=values[f.name], **common)
        if kind is bool:
            return gr.Checkbox(values[f.name], **common)
        if is_number_box(f):
            return gr.Number(values[f.name], precision=0 if kind is int else None, **common)
        return gr.Textbox(values[f.name], lines=3 if kind is list else 1, max_lines=8, placeholder=HINTS.get(f.name),
                          scale=2 if kind is str else 1, **common)

    made = {}
    short = [f for f in FIELDS if field_kind(f)[0] is not list]
    for start in range(0, len(short), FORM_COLUMNS):
        with gr.Row():
            made.update({f.name: field_input(f) for f in short[start:start + FORM_COLUMNS]})
    made.update({f.name: field_input(f) for f in FIELDS if field_kind(f)[0] is list})
    return [made[name] for name in FIELD_NAMES]


def preset_bar(home: Path) -> SimpleNamespace:
    p = SimpleNamespace()
    with gr.Row():
        p.preset = gr.Dropdown(preset_names(home), value=DEFAULT_PRESET, label="Preset", scale=2,
                               elem_id="train-preset")
        p.load = gr.Button("Load preset", scale=1, elem_id="train-preset-load")
        p.name = gr.Textbox("", label="Save as preset", placeholder="a name: letters, digits, - _ .", scale=2,
                            elem_id="train-preset-name")
        p.save = gr.Button("Save preset", scale=1, elem_id="train-preset-save")
    return p


def control_panel() -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Row():
        c.name = gr.Textbox("", label="Run name", placeholder="blank: run <id>", scale=2, elem_id="train-name")
        c.start = gr.Button("Start", variant="primary", scale=1, elem_id="train-start")
        c.stop = gr.Button("Stop", variant="stop", scale=1, elem_id="train-stop")
        c.save = gr.Button("Save now", scale=1, elem_id="train-save")
        c.sample = gr.Button("Sample now", scale=1, elem_id="train-sample")
        c.resume = gr.Button("Resume", scale=1, elem_id="train-resume")
        c.run = gr.Number(None, label="Run", info="0 or blank: the newest", precision=0, scale=1, elem_id="train-run")
    c.message = gr.Markdown(elem_id="train-message")
    return c


def monitor_panel() -> SimpleNamespace:
    m = SimpleNamespace()
    m.runs = gr.Dataframe(headers=RUN_HEADERS, interactive=False, max_height=260, label="Runs (click one)",
                          elem_id="train-runs")
    with gr.Row(equal_height=False):
        # Empty until there are losses: a plot first sent an empty table draws no lines afterwards; and a
        # shown label pushes the legend out of the frame.
        m.loss = gr.LinePlot(None, x="step", y="loss", color="series", label="Loss", show_label=False, height=360,
                             scale=3, elem_id="train-loss")
        m.samples = gr.Image(label="Samples (a row per prompt, a column per step)", type="filepath",
                             interactive=False, height=360, scale=2, elem_id="train-sample-grid")
    m.command = gr.Textbox("", label="Command (copy it to run the same in a shell)", lines=2, max_lines=4,
                           interactive=False, buttons=["copy"], elem_id="train-command")
    m.log = gr.Textbox(label="Log", lines=10, max_lines=10, autoscroll=True, interactive=False, elem_id="train-log")
    return m


# wiring


def build(settings: Settings) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    store = Store(settings.home)
    launcher.reconcile(store)  # on studio start: runs that died while it was down are failed, the queue moves
    p = preset_bar(store.home)
    with gr.Accordion("Settings", open=True):
        form = config_inputs(load_preset(DEFAULT_PRESET, store.home))
    c = control_panel()
    m = monitor_panel()
    wire_controls(store, form, c)
    wire_monitor(store, c, m, gr.Timer(1.0))
    wire_presets(store, p, form, c)


def wire_controls(store: Store, form: list, c: SimpleNamespace) -> None:
    """Start a run from the form; stop, save, sample and resume the chosen one."""

    def train_start(name, *values):
        """Start a training run with the form's settings (queued while its devices are busy); returns its id
        and a message."""
        with shown_as_gr_error("starting the run"):
            config = resolve_config(config_from_form(values))
            config = replace(config, out=inside_data_folder("the run folder", config.out, store.home))
            run_id = launcher.launch(store, config, (name or "").strip())
            run = launcher.get_run(store, run_id)
        where = "the CPU" if run["devices"] == "cpu" else f"GPU {run['devices']}"
        waiting = " (queued: another run holds its devices)" if run["status"] == "queued" else ""
        return run_id, f"Started run {run_id} on {where}{waiting}."

    def ask(run_id, what: str) -> str:
        with shown_as_gr_error(f"asking the run to {what}"):
            return launcher.request(store, chosen_run(store, run_id, ("running",), what)["id"], what)

    def train_stop(run_id=None):
        """Stop run `run_id` (blank: the newest running one) after a checkpoint; resume continues from there."""
        return ask(run_id, "stop")

    def train_save(run_id=None):
        """Ask run `run_id` (blank: the newest running one) to save a checkpoint after its current step."""
        return ask(run_id, "save")

    def train_sample(run_id=None):
        """Ask run `run_id` (blank: the newest running one) to draw its samples after its current step."""
        return ask(run_id, "sample")

    def train_resume(run_id=None):
        """Queue a stopped or failed run (blank: the newest) again; it continues from its newest checkpoint."""
        with shown_as_gr_error("resuming the run"):
            resumed = launcher.resume(store, chosen_run(store, run_id, ("stopped", "failed"), "resume")["id"],
                                      default_base=DEFAULT_BASE)
        return resumed, f"Resumed run {resumed}: it continues from its newest checkpoint."

    c.start.click(named_after_fields(train_start, "name"), [c.name, *form], [c.run, c.message],
                  api_name="train_start")
    c.stop.click(train_stop, c.run, c.message, queue=False, api_name="train_stop")
    c.save.click(train_save, c.run, c.message, queue=False, api_name="train_save")
    c.sample.click(train_sample, c.run, c.message, queue=False, api_name="train_sample")
    c.resume.click(train_resume, c.run, [c.run, c.message], api_name="train_resume")


def wire_monitor(store: Store, c: SimpleNamespace, m: SimpleNamespace, timer: gr.Timer) -> None:
    """The runs table, and the log, losses, samples and command of the chosen run, on every tick."""

    def train_runs(run_id=None):
        """The runs (newest first), then the log, losses, samples grid and command of run `run_id`
        (blank: the newest)."""
        with shown_as_gr_error("reading the runs"):
            launcher.reconcile(store)
            return run_rows(store), *run_view(store, run_id)

    timer.tick(train_runs, c.run, [m.runs, m.log, m.loss, m.samples, m.command], api_name="train_runs",
               show_progress="hidden")
    m.runs.select(selected_id, None, c.run, api_visibility="private")


def wire_presets(store: Store, p: SimpleNamespace, form: list, c: SimpleNamespace) -> None:
    """Fill the form from a preset, or save the form as one."""

    def train_preset_load(preset):
        """The settings of a preset (built in, or saved in the data folder), in field order."""
        with shown_as_gr_error("loading the preset"):
            return tuple(form_values(load_preset(preset, store.home)))

    def train_preset_save(preset_name, *values):
        """Save the settings as a YAML preset in the data folder; returns the preset list and a message."""
        with shown_as_gr_error("saving the preset"):
            path = save_preset(config_from_form(values), (preset_name or "").strip(), store.home)
        return gr.Dropdown(choices=preset_names(store.home), value=path.stem), f"Saved preset `{path}`"

    p.load.click(train_preset_load, p.preset, form, api_name="train_preset_load")
    p.save.click(named_after_fields(train_preset_save, "preset_name"), [p.name, *form], [p.preset, c.message],
                 api_name="train_preset_save")
