"""The Evaluate tab: sample and judge as background jobs through the HTTP API (gradio_client), against a
scripted judge on 127.0.0.1; and the results, chart and samples in a real browser."""

import time

import pytest
from gradio_client import Client

from mini.benchmark import write_benchmark
from mini.embedded import with_embedded
from pipeline.evaluation import stages as evaluation
from pipeline.evaluation.dreambench import BUILTIN
from pipeline.evaluation.stages import get_eval
from pipeline.generation.weights import ModelSpec
from pipeline.store import Store
from tests.pipeline.evaluation.test_stages import ScriptedJudge, closed_port_url
from studio.views import NO_EVALUATIONS, results_view, sample_view
from tests.studio.conftest import TIMEOUT_MS, save_screenshot

EMBEDDED = with_embedded(ModelSpec())  # the model the studio runs when none is named


def wait_for_job(client, job_id: int, timeout: float = 240) -> tuple[list, str]:
    deadline = time.monotonic() + timeout
    while True:
        jobs, log = client.predict(job_id=job_id, api_name="/eval_jobs")
        row = next(row for row in jobs["data"] if row[0] == job_id)
        if row[2] != "running" or time.monotonic() > deadline:
            return row, log
        time.sleep(0.3)


def figures(table: dict) -> dict:
    return {row[0]: (row[1], row[2]) for row in table["data"] if row and row[0]}


def test_sample_and_judge_run_as_jobs_and_the_results_equal_the_report(start_studio, tmp_path, fake_api, monkeypatch):
    fake_api.reply = ScriptedJudge()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # before the judge job starts: the child inherits it
    with start_studio(tmp_path) as studio:
        client = Client(studio.url, verbose=False)
        job_id, message = client.predict(name="api-eval", benchmark=str(BUILTIN), base="", dsd="", run=None,
                                         per_prompt=1, seed=3, size=64, steps=2, api_name="/eval_sample")
        assert f"Started job {job_id}" in message and "--size 64" in message
        assert "api-eval" in client.predict(api_name="/eval_names")  # made at once, before the job ends
        _, pending, _, _ = client.predict(name="api-eval", api_name="/eval_results")
        assert "no judgements yet" in pending
        row, log = wait_for_job(client, job_id)
        assert row[1:4] == ["sample", "done", "36/36"], (row, log)

        job_id, message = client.predict(name="api-eval", judge_url=fake_api.openai_base_url,
                                         judge_model="scripted-judge", judge_spec="", runs=2, concurrency=4,
                                         api_name="/eval_judge")
        row, log = wait_for_job(client, job_id)
        assert row[1:3] == ["judge", "done"], (row, log)
        table, provenance, markdown, chart = client.predict(name="api-eval", api_name="/eval_results")

        with pytest.raises(Exception, match="needs both Judge URL and Judge model"):
            client.predict(name="api-eval", judge_url="", judge_model="lonely-model", judge_spec="", runs=1,
                           concurrency=1, api_name="/eval_judge")
        with pytest.raises(Exception, match="no evaluation"):
            client.predict(name="nothing-here", api_name="/eval_results")
        assert client.predict(api_name="/eval_names") == ["api-eval"]  # still answering
        view = client.predict(name="api-eval", index=0, api_name="/eval_sample_view")

    expected = evaluation.report(Store(tmp_path), "api-eval", allow_partial=True)
    shown = figures(table)
    for label, key in (("CP", "cp"), ("PF", "pf"), ("CP·PF", "cp_pf")):
        assert shown[label] == (pytest.approx(expected[key]["mean"]), pytest.approx(expected[key]["std"]))
    assert not expected["partial"] and expected["runs"] == 2
    assert fake_api.openai_base_url in provenance and "local endpoint" in provenance and "72/72" in provenance
    assert "DSD (paper, GPT-4o)" in markdown and "api-eval" in markdown
    assert chart["columns"] == ["category", "cp"] and {category: pytest.approx(cp) for category, cp in chart["data"]} == {
        category: figures["cp"]["mean"] for category, figures in expected["by_category"].items()}
    assert view["output"].endswith(".png") and "Prompt:" in view["caption"]
    assert len(view["scores"]) == 2 and view["scores"][0][4].startswith("Same subject")  # the judge's reasoning


def test_on_the_miniature_sample_judge_and_results_need_no_endpoint(start_studio, tmp_path):
    """Blank fields: the model's own size, the world benchmark (a small one here, for time) and the miniature's
    attribute judge. The Results view opens with a hint before the first evaluation."""
    world = write_benchmark(tmp_path / "world", per_mode=1)
    with start_studio(tmp_path / "home") as studio:
        client = Client(studio.url, verbose=False)
        _, opening, _, _ = client.predict(name="", api_name="/eval_results")
        assert opening == NO_EVALUATIONS
        job_id, message = client.predict(name="world", benchmark=str(world), base="", dsd="", run=None,
                                         per_prompt=1, seed=0, size=None, steps=2, api_name="/eval_sample")
        assert "--size" not in message  # the model's own: 64 px on the miniature
        row, log = wait_for_job(client, job_id)
        assert row[1:4] == ["sample", "done", "3/3"], (row, log)
        job_id, message = client.predict(name="world", judge_url="", judge_model="", judge_spec="", runs=1,
                                         concurrency=2, api_name="/eval_judge")
        row, log = wait_for_job(client, job_id)
        assert row[1:3] == ["judge", "done"], (row, log)
        table, provenance, _, chart = client.predict(name="world", api_name="/eval_results")
        assert client.predict(name="", api_name="/eval_results")[1] == "Pick an evaluation."
    assert get_eval(Store(tmp_path / "home"), "world")["size"] == 64
    assert "mini-judge:" in provenance and "attribute readings" in provenance and "3/3" in provenance
    assert set(figures(table)) >= {"CP", "PF", "CP·PF"}
    assert {category for category, _ in chart["data"]} == {"identity", "relight", "instruct"}


def test_a_judge_that_cannot_be_reached_fails_its_job_in_the_tabs_words(start_studio, tmp_path, monkeypatch):
    """Through the real client, on a port where nothing listens: the job fails at the first sample, its error
    names the tab's field, and the results and samples still show (no red boxes, no blank browser)."""
    store = Store(tmp_path)
    eval_id = evaluation.create_eval(store, "photos", size=64, steps=1)
    evaluation.sample_items(store, eval_id, limit=2, model=EMBEDDED)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with start_studio(tmp_path) as studio:
        client = Client(studio.url, verbose=False)
        job_id, _ = client.predict(name="photos", judge_url=closed_port_url(), judge_model="nobody-home",
                                   judge_spec="", runs=3, concurrency=4, api_name="/eval_judge")
        row, log = wait_for_job(client, job_id)
        _, note, _, _ = client.predict(name="photos", api_name="/eval_results")
        view = client.predict(name="photos", index=1, api_name="/eval_sample_view")
        with pytest.raises(Exception, match="choose a judge for evaluation 'photos': Judge URL and Judge model"):
            client.predict(name="photos", judge_url="", judge_model="", judge_spec="", runs=1, concurrency=1,
                           api_name="/eval_judge")
    assert row[2] == "failed", (row, log)
    assert row[5].startswith("judging stopped, nothing scored: ") and row[5].endswith(
        "cannot be reached; check the network connection and Judge URL."), row
    assert "--judge" not in row[5] and row[5].count("\n") == 0
    assert "no judgements yet" in note  # nothing was recorded
    assert view["output"].endswith(".png") and "2 of 2" in view["caption"]


def test_a_judge_that_failed_every_sample_is_said_so_in_results_and_samples(fake_api, monkeypatch, tmp_path):
    store = Store(tmp_path)
    eval_id = evaluation.create_eval(store, "scoreless", size=64, steps=1)
    evaluation.sample_items(store, eval_id, limit=2, model=EMBEDDED)
    fake_api.reply = lambda body: "A picture."
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(evaluation.JudgeFailed, match="failed all 2 judgements"):
        evaluation.judge_samples(store, eval_id, evaluation.judge_from_options(fake_api.openai_base_url, "mute"), runs=1)
    figures_shown, note, _, chart = results_view(store, "scoreless")
    assert figures_shown == [] and chart.empty
    assert note.startswith("Evaluation **scoreless**: the judge failed all 2 judgements (last: ")
    scores = sample_view(store, "scoreless", 0)[4]
    assert scores[0][2] is None and scores[0][4].startswith("failed: openai:mute") and "no 'Score: N' line" in scores[0][4]


@pytest.fixture(scope="module")
def judged_home(tmp_path_factory):
    """A data folder with one evaluation, sampled and judged in-process by the scripted judge."""
    from tests.fake_api import FakeAPI

    home = tmp_path_factory.mktemp("eval-tab")
    store = Store(home)
    eval_id = evaluation.create_eval(store, "judged", size=64, steps=2)
    evaluation.sample_items(store, eval_id, limit=8, model=EMBEDDED)  # a partial evaluation: quicker, and shown as such
    with FakeAPI() as server, pytest.MonkeyPatch.context() as patch:
        server.reply = ScriptedJudge()
        patch.setenv("OPENAI_API_KEY", "sk-test")
        judge = evaluation.judge_from_options(server.openai_base_url, "scripted-judge")
        evaluation.judge_samples(store, eval_id, judge, runs=1)
    evaluation.create_eval(store, "unjudged", size=64, steps=2)
    return home


def test_pick_an_evaluation_and_see_its_figures_and_chart(browser, start_studio, judged_home):
    from playwright.sync_api import expect

    with start_studio(judged_home) as studio:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(studio.url)
        page.get_by_role("tab", name="Evaluate").click()
        expect(page.locator("#eval-provenance")).to_contain_text("Pick an evaluation.")
        for pick, name in (("#eval-pick", "judged"), ("#eval-pick-b", "unjudged")):
            page.locator(f"{pick} input").click()
            page.locator("ul[role=listbox] li[role=option]", has_text=name).filter(
                has_not_text="unjudged" if name == "judged" else "@@").first.click()
            expect(page.locator(f"{pick} input")).to_have_value(name)

        figures_table = page.locator("#eval-figures")
        expect(figures_table).to_contain_text("CP·PF")
        expect(page.locator("#eval-provenance")).to_contain_text("local endpoint")
        expect(page.locator("#eval-provenance-b")).to_contain_text("no judgements yet")
        expect(page.locator("#eval-table")).to_contain_text("DSD (paper, GPT-4o)")
        expect(page.locator("#eval-chart canvas, #eval-chart svg").first).to_be_visible()
        save_screenshot(page, "eval-figures.png")

        page.get_by_role("tab", name="Samples").click()
        expect(page.locator("#eval-caption")).to_contain_text("1 of 8")
        expect(page.locator("#eval-scores")).to_contain_text("Same subject")
        expect(page.locator("#eval-output img")).to_be_visible()
        page.close()


def test_the_results_view_opens_with_what_to_do_first(browser, start_studio, tmp_path):
    from playwright.sync_api import expect

    with start_studio(tmp_path) as studio:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(studio.url)
        page.get_by_role("tab", name="Evaluate").click()
        expect(page.locator("#eval-provenance")).to_contain_text("No evaluations yet: run Sample, then Judge, in Run")
        evaluation.create_eval(Store(tmp_path), "made-elsewhere", size=64, steps=1)  # the timer notices it
        expect(page.locator("#eval-provenance")).to_contain_text("Pick an evaluation.")
        page.close()
