"""The Evaluate tab: the DreamBench++ protocol (`pipeline.evaluation.stages`) as background jobs, and its results.

Layout and event wiring only. Sampling, judging and the feature metrics run as `dsd eval STAGE` in a
job process of their own, started from their settings (`studio.forms`, `studio.shared.start_stage`); the
tab shows what `studio.views` reads from the store, on a timer. API names: `eval_sample`, `eval_judge`, `eval_metrics`, `eval_stop`,
`eval_jobs`, `eval_names`, `eval_results`, `eval_sample_view`.
"""

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from pipeline.evaluation import stages as evaluation
from pipeline.generation.generate import Settings
from pipeline.jobs import reconcile
from pipeline.store import Store
from studio.eval_defaults import JUDGE_FIELDS, default_evaluation_name, evaluation_judge
from studio.forms import judge_stage, metrics_stage, sample_stage
from studio.shared import selected_id, shown_as_gr_error, start_stage, stop_job
from studio.views import (
    FIGURE_HEADERS,
    JOB_HEADERS,
    SCORE_HEADERS,
    job_log,
    job_rows,
    opening_hint,
    results_view,
    sample_view,
)

# layout


def run_panel(name: str = "") -> SimpleNamespace:
    r = SimpleNamespace()
    with gr.Row():
        r.name = gr.Textbox(name, label="Evaluation name", elem_id="eval-name",
                            info="Sample again under the same name to continue it; Judge and Results use it too")
        r.benchmark = gr.Textbox("", label="Benchmark folder", elem_id="eval-benchmark",
                                 placeholder="blank: the miniature's world benchmark on the embedded model, "
                                             "else the built-in photo set")
    with gr.Row():
        r.base = gr.Textbox("", label="Base model", placeholder="blank: the embedded model; a FLUX.1-dev folder")
        r.dsd = gr.Textbox("", label="DSD weights", placeholder="blank: none; a DSD weights or training run folder")
        r.run = gr.Number(None, label="Training run id", info="instead of base and weights; blank or 0: none",
                          precision=0)
    with gr.Row():
        r.per_prompt = gr.Number(1, label="Pictures per prompt", precision=0)
        r.seed = gr.Number(0, label="Seed", precision=0)
        r.size = gr.Number(None, label="Size", info="blank: the model's own (64 for the miniature, 512 for FLUX)",
                           precision=0, elem_id="eval-size")
        r.steps = gr.Number(None, label="Steps", info="blank: the model's own (20 for the miniature, 28 for FLUX)",
                            precision=0, elem_id="eval-steps")
    with gr.Row():
        r.judge_url = gr.Textbox("", label=JUDGE_FIELDS["url"],
                                 placeholder="OpenAI-compatible endpoint (key: OPENAI_API_KEY)")
        r.judge_model = gr.Textbox("", label=JUDGE_FIELDS["model"], placeholder="model name at the URL")
        r.judge_spec = gr.Textbox("", label=JUDGE_FIELDS["spec"],
                                  placeholder="gemini:MODEL (key: GEMINI_API_KEY) or mini:FOLDER; all blank: the "
                                              "miniature's attribute judge on its world benchmark")
        r.runs = gr.Number(3, label="Runs", precision=0)
        r.concurrency = gr.Number(4, label="Concurrency", precision=0)
    with gr.Row():
        r.clip = gr.Textbox("", label="CLIP folder", placeholder="openai/clip-vit-base-patch32")
        r.dino = gr.Textbox("", label="DINO folder", placeholder="facebook/dino-vits8")
        r.dinov2 = gr.Textbox("", label="DINOv2 folder", placeholder="facebook/dinov2-small")
    with gr.Row():
        r.sample = gr.Button("Sample", variant="primary", elem_id="eval-sample")
        r.judge = gr.Button("Judge", variant="primary", elem_id="eval-judge")
        r.metrics = gr.Button("Metrics", elem_id="eval-metrics")
        r.stop = gr.Button("Stop", variant="stop", elem_id="eval-stop")
        r.job = gr.Number(None, label="Log of job", info="blank: the newest", precision=0, elem_id="eval-job")
    r.message = gr.Markdown(elem_id="eval-message")
    r.jobs = gr.Dataframe(headers=JOB_HEADERS, interactive=False, max_height=260, label="Jobs", elem_id="eval-jobs")
    r.log = gr.Textbox(label="Log", lines=10, max_lines=10, autoscroll=True, interactive=False, elem_id="eval-log")
    return r


def results_column(suffix: str, label: str) -> SimpleNamespace:
    c = SimpleNamespace()
    c.pick = gr.Dropdown([], value=None, label=label, allow_custom_value=True, elem_id=f"eval-pick{suffix}")
    c.provenance = gr.Markdown(elem_id=f"eval-provenance{suffix}")
    c.figures = gr.Dataframe(headers=FIGURE_HEADERS, interactive=False, label="Figures (mean and std over runs)",
                             elem_id=f"eval-figures{suffix}")
    c.chart = gr.BarPlot(pd.DataFrame(columns=["category", "cp"]), x="category", y="cp", y_lim=[0, 1],
                         title="CP by category", elem_id=f"eval-chart{suffix}")
    return c


def results_panel() -> SimpleNamespace:
    p = SimpleNamespace()
    with gr.Row(equal_height=False):
        with gr.Column():
            p.a = results_column("", "Evaluation")
        with gr.Column():
            p.b = results_column("-b", "Compare with")
    p.table = gr.Markdown(elem_id="eval-table")
    return p


def samples_panel() -> SimpleNamespace:
    s = SimpleNamespace()
    with gr.Row():
        s.previous = gr.Button("← Previous", elem_id="eval-previous")
        s.next = gr.Button("Next →", elem_id="eval-next")
    s.caption = gr.Markdown(elem_id="eval-caption")
    with gr.Row(equal_height=True):
        s.reference = gr.Image(label="Reference", type="filepath", interactive=False, height=320,
                               elem_id="eval-reference")
        s.output = gr.Image(label="Output", type="filepath", interactive=False, height=320, elem_id="eval-output")
    s.scores = gr.Dataframe(headers=SCORE_HEADERS, interactive=False, wrap=True, label="Judgements",
                            elem_id="eval-scores")
    s.index = gr.State(0)
    return s


# wiring


def build(settings: Settings) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    store = Store(settings.home)
    with gr.Tabs():
        with gr.Tab("Results", id="eval-results"):
            p = results_panel()
        with gr.Tab("Samples", id="eval-samples"):
            s = samples_panel()
        with gr.Tab("Run", id="eval-run"):
            r = run_panel(default_evaluation_name(settings))
    timer = gr.Timer(1.0)
    wire_run(store, r, timer)
    wire_results(store, p, s, timer)


def wire_run(store: Store, r: SimpleNamespace, timer: gr.Timer) -> None:
    def eval_sample(name, benchmark="", base="", dsd="", run=None, per_prompt=1, seed=0, size=None, steps=None):
        """Make (or continue) evaluation `name` and generate its samples as a background job; returns job id, message."""
        with shown_as_gr_error("starting the sampling"):
            settings = sample_stage(name, benchmark, base, dsd, run, per_prompt, seed, size, steps)
            settings.evaluation_id(store)  # made now: listed at once, and other settings under its name refused
            return start_stage(store, settings)

    def eval_judge(name, judge_url="", judge_model="", judge_spec="", runs=3, concurrency=4):
        """Score an evaluation's samples as a background job (all judge fields blank: the evaluation's default
        judge, the miniature's attribute judge on its world benchmark); returns job id, message."""
        with shown_as_gr_error("starting the judge"):
            settings = judge_stage(name, judge_url, judge_model, judge_spec, runs, concurrency)
            evaluation_judge(evaluation.get_eval(store, settings.evaluation), settings.judge_url, settings.judge_model,
                             settings.judge_spec, names=JUDGE_FIELDS)
            return start_stage(store, settings)

    def eval_metrics(name, clip="", dino="", dinov2=""):
        """CLIP-I/T and DINO scores from local checkpoint folders as a background job; returns job id, message."""
        with shown_as_gr_error("starting the metrics"):
            settings = metrics_stage(name, clip, dino, dinov2)
            evaluation.get_eval(store, settings.evaluation)
            return start_stage(store, settings)

    def eval_stop(job_id=None):
        """Ask an evaluation job (blank: the newest running one) to stop."""
        with shown_as_gr_error("stopping the job"):
            stopped = stop_job(store, "eval:", job_id, "evaluation")
        return f"Asked job {stopped} to stop."

    def eval_jobs(job_id=None):
        """The evaluation jobs (newest first) and the log of job `job_id` (blank: the newest)."""
        with shown_as_gr_error("reading the jobs"):
            reconcile(store)
            return job_rows(store, "eval:"), job_log(store, "eval:", job_id)

    sample_inputs = [r.name, r.benchmark, r.base, r.dsd, r.run, r.per_prompt, r.seed, r.size, r.steps]
    r.sample.click(eval_sample, sample_inputs, [r.job, r.message], api_name="eval_sample")
    r.judge.click(eval_judge, [r.name, r.judge_url, r.judge_model, r.judge_spec, r.runs, r.concurrency],
                  [r.job, r.message], api_name="eval_judge")
    r.metrics.click(eval_metrics, [r.name, r.clip, r.dino, r.dinov2], [r.job, r.message], api_name="eval_metrics")
    r.stop.click(eval_stop, r.job, r.message, queue=False, api_name="eval_stop")
    timer.tick(eval_jobs, r.job, [r.jobs, r.log], api_name="eval_jobs", show_progress="hidden")
    r.jobs.select(selected_id, None, r.job, api_visibility="private")


def wire_results(store: Store, p: SimpleNamespace, s: SimpleNamespace, timer: gr.Timer) -> None:
    known = gr.State(None)  # None: the first refresh always shows (an empty list is news too)

    def eval_names() -> list[str]:
        """The evaluations' names, newest first."""
        with shown_as_gr_error("reading the evaluations"):
            return store.eval_names()

    def refresh_pickers(shown, picked):
        names = eval_names()
        if names == shown:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        hint = gr.skip() if picked else opening_hint(store)  # nothing picked: what to do first
        return names, gr.Dropdown(choices=names), gr.Dropdown(choices=names), hint

    def eval_results(name):
        """An evaluation's figures (CP, PF, CP·PF mean and std; de-biased CP; metrics), its provenance
        line, the Table 1 markdown and CP by category; a message when it has no judgements yet."""
        with shown_as_gr_error("reading the results"):
            return results_view(store, name)

    def show_sample(name, index=0, step=0):
        with shown_as_gr_error("reading the sample"):
            return sample_view(store, name, int(index or 0) + step)

    def eval_sample_view(name: str, index: int = 0) -> dict:
        """Sample `index` (0-based) of an evaluation: index, reference and output paths, caption, each run's scores."""
        index, reference, output, caption, scores = show_sample(name, index)
        return {"index": index, "reference": reference, "output": output, "caption": caption, "scores": scores}

    pickers = [known, p.a.pick, p.b.pick, p.a.provenance]
    gr.on(None, refresh_pickers, [known, p.a.pick], pickers, api_visibility="private")
    timer.tick(refresh_pickers, [known, p.a.pick], pickers, api_visibility="private", show_progress="hidden")
    gr.api(eval_names, api_name="eval_names")
    a_view = [p.a.figures, p.a.provenance, p.table, p.a.chart]
    b_view = [p.b.figures, p.b.provenance, gr.State(""), p.b.chart]
    sample = [s.index, s.reference, s.output, s.caption, s.scores]
    p.a.pick.change(eval_results, p.a.pick, a_view, api_name="eval_results").then(
        show_sample, [p.a.pick], sample, api_visibility="private")
    p.b.pick.change(eval_results, p.b.pick, b_view, api_visibility="private")
    gr.api(eval_sample_view, api_name="eval_sample_view")
    s.previous.click(lambda name, index: show_sample(name, index, -1), [p.a.pick, s.index], sample,
                     api_visibility="private")
    s.next.click(lambda name, index: show_sample(name, index, 1), [p.a.pick, s.index], sample,
                 api_visibility="private")
