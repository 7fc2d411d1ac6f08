"""The Data wheel tab: run the wheel's stages as background jobs, review the curated pairs, export.

Layout and event wiring only. A stage runs as `dsd wheel STAGE` in a job process of its own, started
from its settings (`studio.forms.wheel_stage`, `studio.shared.start_stage`), so it survives page reloads;
the tab shows what `studio.views` reads from the store, on a timer. API names: `wheel_start`, `wheel_stop`, `wheel_jobs`, `wheel_pairs`,
`wheel_review`, `wheel_export`, `wheel_teacher_steps`.
Keyboard, while no text box has the focus: a accept, r reject, f flag, j / right next, k / left previous.
"""

import json
from datetime import datetime
from types import SimpleNamespace

import gradio as gr

from pipeline.generation.generate import Settings
from pipeline.jobs import reconcile
from pipeline.store import REVIEW_FILTERS, VERDICT_FILTERS, Store
from pipeline.wheel.dataset import CAPTION_STYLES, export_pairs
from pipeline.wheel.grids import LAYOUTS
from pipeline.wheel.stages import review_pair, review_queue, wheel_stats
from studio.forms import RUNNABLE_STAGES, text, wheel_stage
from studio.resolve import teacher_steps
from studio.shared import selected_id, shown_as_gr_error, start_stage, stop_job
from studio.views import JOB_HEADERS, PAIR_HEADERS, job_log, job_rows, pair_rows, pair_view

PAIRS_SHOWN = 2000
SHORTCUTS = {"a": "wheel-accept", "r": "wheel-reject", "f": "wheel-flag", "j": "wheel-next",
             "ArrowRight": "wheel-next", "k": "wheel-previous", "ArrowLeft": "wheel-previous"}
# Small pictures are drawn as large as their frame (gradio shows them at their own size).
PICTURES_CSS = ("#wheel-reference img, #wheel-target img, #wheel-grid img "
                "{width: 100%; height: 100%; object-fit: contain;}")
# Run once per page: the shortcuts click the visible button of a key unless the user is typing.
# The style goes in here too: gradio 6 takes page CSS only in `launch()`, which the tab does not own.
PAGE_JS = """() => {
  if (window.dsdWheelKeys) return;
  window.dsdWheelKeys = true;
  const style = document.createElement("style");
  style.textContent = %s;
  document.head.append(style);
  const buttons = %s;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable='true']")) return;
    const button = document.getElementById(buttons[event.key]);
    if (!button || button.offsetParent === null) return;
    event.preventDefault();
    button.click();
  });
}""" % (json.dumps(PICTURES_CSS), json.dumps(SHORTCUTS))


RATES = ("hit_rate", "acceptance_rate", "review_agreement")

# layout


def run_form() -> SimpleNamespace:
    """The Run inputs, in the order `wheel_start` takes them."""
    f = SimpleNamespace()
    with gr.Row():
        f.stage = gr.Dropdown(list(RUNNABLE_STAGES), value="captions", label="Stage", elem_id="wheel-stage")
        f.limit = gr.Number(None, label="Limit", info="blank or 0: everything pending", precision=0, elem_id="wheel-limit")
    with gr.Group(visible=True) as f.captions:
        f.source = gr.Textbox("", label="Caption file", placeholder="blank: the miniature's world; or a txt, csv, jsonl "
                              "or parquet file on the server", elem_id="wheel-source")
    with gr.Group(visible=False) as f.prompts, gr.Row():
        f.writer = gr.Textbox("", label="Prompt writer", placeholder="blank: offline templates; openai:MODEL[@URL] or gemini:MODEL")
        f.layout = gr.Dropdown(list(LAYOUTS), value="2x2", allow_custom_value=True, label="Layout")
    with gr.Group(visible=False) as f.grids, gr.Row():
        f.teacher = gr.Textbox("", label="Teacher", placeholder="blank: the embedded model; a FLUX folder or hub id",
                               elem_id="wheel-teacher")
        f.per_prompt = gr.Number(1, label="Grids per prompt", precision=0)
        f.size = gr.Textbox("", label="Size", placeholder="blank: 1024 (144 embedded); W or WxH")
        f.steps = gr.Number(teacher_steps(None), label="Steps", info="follows the teacher; blank: its own", precision=0,
                            elem_id="wheel-steps")
    with gr.Group(visible=False) as f.curate, gr.Row():
        f.judge = gr.Textbox("", label="Judge", elem_id="wheel-judge",
                             placeholder="blank: the embedded miniature's attribute judge; mini:FOLDER; offline: an "
                             "image-similarity stand-in, not a VLM; openai:MODEL[@URL] or gemini:MODEL")
        f.concurrency = gr.Number(4, label="Concurrency", precision=0)
    return f


def review_panel() -> SimpleNamespace:
    v = SimpleNamespace()
    with gr.Row():
        v.verdict = gr.Dropdown(list(VERDICT_FILTERS), value="all", label="Verdict", elem_id="wheel-verdict-filter")
        v.min_confidence = gr.Slider(0, 1, value=0, step=0.05, label="Min confidence", elem_id="wheel-confidence")
        v.review = gr.Dropdown(list(REVIEW_FILTERS), value="all", label="Review", elem_id="wheel-review-filter")
        v.disagreement = gr.Checkbox(False, label="Person and judge disagree", elem_id="wheel-disagreement")
    v.position = gr.Markdown(elem_id="wheel-position")
    with gr.Row(equal_height=True):
        v.reference = gr.Image(label="Reference", type="filepath", interactive=False, height=360, elem_id="wheel-reference")
        v.target = gr.Image(label="Target", type="filepath", interactive=False, height=360, elem_id="wheel-target")
        v.grid = gr.Image(label="Grid it came from", type="filepath", interactive=False, height=360, elem_id="wheel-grid")
    with gr.Row():
        v.previous = gr.Button("← Previous (k)", elem_id="wheel-previous", scale=1)
        v.accept = gr.Button("Accept (a)", variant="primary", elem_id="wheel-accept", scale=1)
        v.reject = gr.Button("Reject (r)", variant="stop", elem_id="wheel-reject", scale=1)
        v.flag = gr.Button("Flag (f)", elem_id="wheel-flag", scale=1)
        v.next = gr.Button("Next (j) →", elem_id="wheel-next", scale=1)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            v.verdict_text = gr.Markdown(elem_id="wheel-verdict")
        with gr.Column(scale=2):
            v.review_text = gr.Markdown(elem_id="wheel-review-state")
            v.note = gr.Textbox(label="Note", placeholder="why (optional), saved with the decision", elem_id="wheel-note")
    v.table = gr.Dataframe(headers=PAIR_HEADERS, interactive=False, max_height=260, label="Pairs (click one)",
                           elem_id="wheel-pairs")
    v.ids, v.index, v.pair_id = gr.State([]), gr.State(0), gr.State(None)
    return v


def run_panel() -> SimpleNamespace:
    r = SimpleNamespace(form=run_form())
    with gr.Row():
        r.start = gr.Button("Start", variant="primary", elem_id="wheel-start")
        r.stop = gr.Button("Stop", variant="stop", elem_id="wheel-stop")
        r.job = gr.Number(None, label="Log of job", info="blank: the newest", precision=0, elem_id="wheel-job")
    r.message = gr.Markdown(elem_id="wheel-message")
    r.jobs = gr.Dataframe(headers=JOB_HEADERS, interactive=False, max_height=260, label="Jobs", elem_id="wheel-jobs")
    with gr.Row(equal_height=False):
        r.log = gr.Textbox(label="Log", lines=10, max_lines=10, autoscroll=True, interactive=False, scale=3,
                           elem_id="wheel-log")
        r.stats = gr.Dataframe(headers=["count", "value"], interactive=False, max_height=300, label="Stats",
                               scale=2, elem_id="wheel-stats")
    with gr.Row():
        r.caption_style = gr.Radio(list(CAPTION_STYLES), value="target", label="Caption")
        r.reviewed_only = gr.Checkbox(False, label="Only pairs a person accepted")
        r.export = gr.Button("Export pairs", elem_id="wheel-export")
    r.file = gr.File(label="Exported parquet", interactive=False, height=90, elem_id="wheel-file")
    return r


# wiring


def build(settings: Settings) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    store = Store(settings.home)
    with gr.Tabs():  # a new data folder has nothing to review: the tab opens on the stages
        with gr.Tab("Run stages", id="wheel-run"):
            r = run_panel()
        with gr.Tab("Review pairs", id="wheel-review") as review_tab:
            v = review_panel()
    timer = gr.Timer(1.0)
    wire_run(store, r, timer)
    wire_review(store, v, review_tab)
    gr.on(None, None, js=PAGE_JS, api_visibility="private")


def wire_run(store: Store, r: SimpleNamespace, timer: gr.Timer) -> None:
    f = r.form
    groups = [f.captions, f.prompts, f.grids, f.curate]
    f.stage.change(lambda stage: [gr.Group(visible=group is getattr(f, stage)) for group in groups],
                   f.stage, groups, queue=False, api_visibility="private")

    def wheel_teacher_steps(teacher=""):
        """The steps the teacher is made for (its sampling.json, else FLUX's 28; blank: the embedded teacher)."""
        with shown_as_gr_error("reading the teacher's steps"):
            return teacher_steps(text(teacher))

    f.teacher.change(wheel_teacher_steps, f.teacher, f.steps, queue=False, api_name="wheel_teacher_steps",
                     trigger_mode="always_last")
    inputs = [f.stage, f.limit, f.source, f.writer, f.layout, f.teacher, f.per_prompt, f.size, f.steps,
              f.judge, f.concurrency]

    def wheel_start(stage="captions", limit=None, source="", writer="", layout="2x2", teacher="", per_prompt=1,
                    size="", steps=None, judge="", concurrency=4):
        """Start a wheel stage as a background job; returns its job id and a message."""
        with shown_as_gr_error("starting the stage"):
            return start_stage(store, wheel_stage(stage, limit, source, writer, layout, teacher, per_prompt, size,
                                                  steps, judge, concurrency))

    def wheel_stop(job_id=None):
        """Ask a wheel job (blank: the newest running one) to stop after its current item."""
        with shown_as_gr_error("stopping the job"):
            stopped = stop_job(store, "wheel:", job_id, "wheel")
        return f"Asked job {stopped} to stop; it saves what it has done first."

    def wheel_jobs(job_id=None):
        """The wheel's jobs (newest first), the log of job `job_id` (blank: the newest) and the stage counts."""
        with shown_as_gr_error("reading the jobs"):
            reconcile(store)
            # The rates first: they are what a glance at the table is for; the counts follow.
            stats = sorted(([name, value] for name, value in wheel_stats(store).items()),
                           key=lambda row: row[0] not in RATES)
            return job_rows(store, "wheel:"), job_log(store, "wheel:", job_id), stats

    def wheel_export(caption_style, reviewed_only):
        """Write the accepted pairs to a parquet file in the data folder; returns it and a message."""
        with shown_as_gr_error("exporting"):
            out = store.home / "exports" / f"pairs-{datetime.now():%Y%m%d-%H%M%S}.parquet"
            count = export_pairs(store, out, caption_style, bool(reviewed_only))
        return str(out), f"{count} pairs written to `{out}`"

    r.start.click(wheel_start, inputs, [r.job, r.message], api_name="wheel_start")
    r.stop.click(wheel_stop, r.job, r.message, queue=False, api_name="wheel_stop")
    timer.tick(wheel_jobs, r.job, [r.jobs, r.log, r.stats], api_name="wheel_jobs", show_progress="hidden")
    r.export.click(wheel_export, [r.caption_style, r.reviewed_only], [r.file, r.message], api_name="wheel_export")
    r.jobs.select(selected_id, None, r.job, api_visibility="private")


def wire_review(store: Store, v: SimpleNamespace, review_tab: gr.Tab) -> None:
    view = [v.index, v.reference, v.target, v.grid, v.position, v.verdict_text, v.review_text, v.note, v.pair_id]
    filters = [v.verdict, v.min_confidence, v.review, v.disagreement]

    def wheel_pairs(verdict, min_confidence, review, disagreement):
        """The pairs that pass the filters (first 2000, oldest first), as a table."""
        with shown_as_gr_error("reading the pairs"):
            pairs = review_queue(store, verdict, min_confidence, review, bool(disagreement), limit=PAIRS_SHOWN)
        return pair_rows(pairs), [pair["pair_id"] for pair in pairs]

    def show(ids, index=0, step=0):
        with shown_as_gr_error("reading the pair"):
            return pair_view(store, ids, int(index or 0) + step)

    def wheel_review(pair_id: int, decision: str, note: str = "") -> dict:
        """Record a person's decision (accept, reject or flag) and note on a pair; returns the stored review."""
        with shown_as_gr_error("saving the review"):
            return review_pair(store, pair_id, decision, note)

    def decide(decision: str):
        def review_and_next(pair_id, note, ids, index):
            if pair_id is None:
                raise gr.Error("no pair is shown: change the filters", print_exception=False)
            wheel_review(pair_id, decision, note)
            table = pair_rows(store.pairs_by_id(ids))
            return table, *show(ids, index, 1)

        return review_and_next

    def select_pair(ids, event: gr.SelectData):
        return show(ids, event.index[0])

    # No triggers: on page load and whenever a filter changes.
    gr.on(None, wheel_pairs, filters, [v.table, v.ids], api_name="wheel_pairs", trigger_mode="always_last").then(
        show, [v.ids], view, api_visibility="private")
    # Pairs made since the page opened (a stage run from the Run tab) show when the Review tab is opened.
    review_tab.select(wheel_pairs, filters, [v.table, v.ids], api_visibility="private").then(
        show, [v.ids], view, api_visibility="private")
    gr.api(wheel_review, api_name="wheel_review")
    v.previous.click(lambda ids, index: show(ids, index, -1), [v.ids, v.index], view, api_visibility="private")
    v.next.click(lambda ids, index: show(ids, index, 1), [v.ids, v.index], view, api_visibility="private")
    for button, decision in ((v.accept, "accept"), (v.reject, "reject"), (v.flag, "flag")):
        button.click(decide(decision), [v.pair_id, v.note, v.ids, v.index], [v.table, *view], api_visibility="private")
    v.table.select(select_pair, [v.ids], view, api_visibility="private")
