"""The whole evaluation offline: the embedded model samples the built-in set, the real `openai` client
talks to a local server that replies with scripted scores, and the report equals those scores
computed by hand (per category, per prompt kind, over 3 runs, with sample std)."""

import json
import statistics
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mini.embedded import with_embedded
from pipeline.errors import UserInputError
from pipeline.evaluation import stages as evaluation
from pipeline.evaluation.dreambench import BUILTIN, load_benchmark
from pipeline.generation.weights import ModelSpec
from pipeline.store import Store
from tests.fake_api import request_images, request_texts

EMBEDDED = with_embedded(ModelSpec())  # the model the studio runs when none is named

ROOT = Path(__file__).resolve().parents[3]
CP_BY_CATEGORY = {"animal": 4, "human": 3, "object": 2, "style": 1}
RUNS = 3


def pf_score(prompt_index: int, run: int) -> int:
    return (prompt_index + run) % 5


class ScriptedJudge:
    """Replies like a judge whose scores the test knows: CP by the reference's category (found by
    comparing the picture sent with the benchmark's references), PF by prompt index and run."""

    def __init__(self, bad_pf_kind: str | None = None):
        self.items = {item.prompt: item for item in load_benchmark(BUILTIN).items()}
        self.references = {subject.category: thumbnail(Image.open(subject.reference))
                           for subject in load_benchmark(BUILTIN).subjects}
        self.seen, self.lock, self.bad_pf_kind = Counter(), threading.Lock(), bad_pf_kind

    def __call__(self, body: dict) -> str:
        text = "\n".join(request_texts(body))
        if "The text prompt: " in text:
            prompt = text.split("The text prompt: ", 1)[1].split("\n", 1)[0]
            item = self.items[prompt]
            with self.lock:
                run = self.seen[prompt]
                self.seen[prompt] += 1
            if item.kind == self.bad_pf_kind:
                return "Score: 5"  # out of range: retried, then a failure
            return f"The image shows it.\nScore: {pf_score(item.prompt_index, run)}"
        if "reconstruction of DSD" in text:
            return "Score: 2"
        reference = thumbnail(request_images(body)[0][1])
        category = min(self.references, key=lambda c: distance(self.references[c], reference))
        return f"Same subject.\nScore: {CP_BY_CATEGORY[category]}"


def thumbnail(image: Image.Image) -> list[int]:
    return list(image.convert("L").resize((8, 8)).getdata())


def distance(a: list[int], b: list[int]) -> int:
    return sum((x - y) ** 2 for x, y in zip(a, b))


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("eval-home"))
    eval_id = evaluation.create_eval(store, "tiny", size=64, steps=2, seed=7)
    assert evaluation.sample_items(store, eval_id, limit=10, model=EMBEDDED) == 10  # resumable: the rest next time
    # A Stop (asked before each picture) ends it between pictures, keeping what it made.
    stop_at_13 = lambda: store.count_eval_samples(eval_id) >= 13  # noqa: E731
    assert evaluation.sample_items(store, eval_id, model=EMBEDDED, should_stop=stop_at_13) == 3
    assert evaluation.sample_items(store, eval_id, model=EMBEDDED) == 23
    assert evaluation.sample_items(store, eval_id, model=EMBEDDED) == 0
    return store, eval_id


def test_samples_are_one_per_prompt_at_recorded_seeds(sampled):
    store, eval_id = sampled
    rows = store.eval_samples(eval_id)
    assert len(rows) == 36 and [row["seed"] for row in rows] == list(range(7, 7 + 36))  # the seed plus its place
    assert all(Image.open(row["path"]).size == (64, 64) for row in rows)
    assert {row["item_id"] for row in rows} == {item.id for item in load_benchmark(BUILTIN).items()}


def judge_with(fake_api, monkeypatch, model="scripted-judge"):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return evaluation.judge_from_options(fake_api.openai_base_url, model)


def test_the_report_equals_the_scripted_scores_computed_by_hand(sampled, fake_api, monkeypatch, tmp_path):
    store, eval_id = sampled
    fake_api.reply = ScriptedJudge()
    judge = judge_with(fake_api, monkeypatch)
    assert evaluation.judge_samples(store, eval_id, judge, runs=RUNS, concurrency=4) == evaluation.JudgeRun(36 * RUNS)
    assert evaluation.judge_samples(store, eval_id, judge, runs=RUNS).added == 0  # a rerun repeats no call

    items = load_benchmark(BUILTIN).items()
    cp_run = statistics.mean(CP_BY_CATEGORY[item.category] / 4 for item in items)
    pf_runs = [statistics.mean(pf_score(item.prompt_index, run) / 4 for item in items) for run in range(RUNS)]
    result = evaluation.report(store, eval_id)
    assert result["cp"] == {"mean": pytest.approx(cp_run), "std": pytest.approx(0)}
    assert result["pf"]["mean"] == pytest.approx(statistics.mean(pf_runs))
    assert result["pf"]["std"] == pytest.approx(statistics.stdev(pf_runs))
    products = [cp_run * pf for pf in pf_runs]
    assert result["cp_pf"]["mean"] == pytest.approx(statistics.mean(products))
    assert result["cp_pf"]["std"] == pytest.approx(statistics.stdev(products))
    for category, score in CP_BY_CATEGORY.items():
        assert result["by_category"][category]["cp"]["mean"] == pytest.approx(score / 4)
    for kind in ("photorealistic", "style change", "imaginative"):
        mine = [statistics.mean(pf_score(i.prompt_index, run) / 4 for i in items if i.kind == kind) for run in range(RUNS)]
        assert result["by_kind"][kind]["pf"]["mean"] == pytest.approx(statistics.mean(mine))
        assert result["by_kind"][kind]["pf"]["std"] == pytest.approx(statistics.stdev(mine))
    assert result["cp_debiased"] == pytest.approx(0.5)
    assert result["coverage"]["scored"] == result["coverage"]["expected"] == 36 * RUNS

    # Provenance: the scripted server can never pass for a published judge.
    assert result["provenance"]["endpoint"] == fake_api.openai_base_url and result["provenance"]["local_endpoint"]
    table = evaluation.markdown_table(result)
    assert "local endpoint" in table and "not a published judge" in table and "DSD (paper, GPT-4o)" in table
    assert evaluation.write_csv(store, eval_id, tmp_path / "judgements.csv") == 36 * RUNS


def test_failed_items_refuse_the_report_until_a_partial_one_is_asked_for(sampled, fake_api, monkeypatch):
    store, eval_id = sampled
    fake_api.reply = ScriptedJudge(bad_pf_kind="imaginative")
    judge = judge_with(fake_api, monkeypatch, model="flaky-judge")
    done = evaluation.judge_samples(store, eval_id, judge, runs=1)
    failed = [row for row in store.eval_judgements(eval_id) if row["judge"] == "flaky-judge" and row["pf"] is None]
    assert len(failed) == 8 and all("pf" in row["errors"] for row in failed)  # 4 subjects x 2 imaginative prompts
    assert (done.added, done.failed) == (36, 8) and "(8 failed, first: " in done.summary(judge)
    with pytest.raises(UserInputError, match="scored 28 of 36"):
        evaluation.report(store, eval_id, judge_name="flaky-judge")
    partial = evaluation.report(store, eval_id, judge_name="flaky-judge", allow_partial=True)
    assert partial["partial"] and partial["coverage"]["scored"] == 28
    assert "(PARTIAL)" in evaluation.markdown_table(partial)


def test_the_cli_reports_json_and_refuses_bad_input_in_one_line(sampled, fake_api, monkeypatch):
    store, eval_id = sampled
    fake_api.reply = ScriptedJudge()
    dsd = [sys.executable, "-m", "studio.cli", "--home", str(store.home), "eval"]
    env = {"OPENAI_API_KEY": "sk-test"}
    import os

    result = subprocess.run([*dsd, "judge", "tiny", "--judge-url", fake_api.openai_base_url, "--judge-model", "cli-judge",
                             "--runs", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    result = subprocess.run([*dsd, "report", "tiny", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert {"cp", "pf", "cp_pf", "coverage", "by_category"} <= set(figures)
    assert figures["provenance"]["judge"] == "cli-judge" and figures["runs"] == 1
    result = subprocess.run([*dsd, "judge", "tiny", "--judge-model", "x"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 2 and "--judge-url" in result.stderr and result.stderr.strip().count("\n") == 0
    result = subprocess.run([*dsd, "report", "nothing-here"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "no evaluation 'nothing-here'" in result.stderr


def test_a_refused_key_stops_the_judge_and_records_nothing(sampled, fake_api, monkeypatch):
    from pipeline.providers import ProviderError

    store, eval_id = sampled
    fake_api.reply = ScriptedJudge()
    fake_api.fail_with(*[401] * 200)
    judge = judge_with(fake_api, monkeypatch, model="refused-judge")
    with pytest.raises(ProviderError, match="401"):
        evaluation.judge_samples(store, eval_id, judge, runs=1, concurrency=1)
    assert [row for row in store.eval_judgements(eval_id) if row["judge"] == "refused-judge"] == []


def test_a_benchmark_reference_that_is_not_a_picture_is_named_before_sampling(tmp_path):
    import os
    import shutil

    benchmark = tmp_path / "bench"
    shutil.copytree(BUILTIN, benchmark)
    broken = sorted((benchmark / "images").rglob("*.*"))[0]
    broken.write_text("a note, not a picture")
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "studio.cli", "eval", "sample", "--name", "broken", "--benchmark",
                             str(benchmark), "--size", "64", "--steps", "1", "--home", str(home)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300, env=os.environ)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"benchmark reference {broken}: this file is not a picture" in result.stderr
    assert not (home / "evals").exists()


def closed_port_url() -> str:
    """An OpenAI-compatible URL on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class HangingUp:
    """A port on 127.0.0.1 that accepts connections and closes them at once, counting them: a judge the
    client cannot get an answer from ("cannot be reached"), whose attempts can be counted."""

    def __init__(self):
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/v1"
        self.connections = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections += 1
            connection.close()


def test_a_judge_that_cannot_be_reached_fails_at_the_first_sample_and_records_nothing(sampled, monkeypatch):
    """Through the real client: the first sample is asked alone, so the other 35 are never sent."""
    from pipeline.providers.base import DEFAULT_MAX_RETRIES

    store, eval_id = sampled
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    judge_port = HangingUp()
    judge = evaluation.judge_from_options(judge_port.url, "nobody-home")
    try:
        with pytest.raises(evaluation.JudgeFailed, match="nothing scored: .*cannot be reached"):
            evaluation.judge_samples(store, eval_id, judge, runs=3, concurrency=4)
    finally:
        judge_port.server.close()
    # At most one sample's requests (CP and PF, 3 runs each), each with the SDK's retries; 36 samples send 648.
    assert 0 < judge_port.connections <= 2 * 3 * (DEFAULT_MAX_RETRIES + 1), judge_port.connections
    assert [row for row in store.eval_judgements(eval_id) if row["judge"] == "nobody-home"] == []


def test_a_judge_that_answers_without_scores_fails_the_stage_with_its_count(sampled, fake_api, monkeypatch):
    store, eval_id = sampled
    fake_api.reply = ScriptedJudge()
    evaluation.judge_samples(store, eval_id, judge_with(fake_api, monkeypatch), runs=1)  # a judge that scored
    fake_api.reply = lambda body: "It is a picture."
    judge = judge_with(fake_api, monkeypatch, model="scoreless-judge")
    with pytest.raises(evaluation.JudgeFailed, match="failed all 36 judgements, nothing scored .*no 'Score: N' line"):
        evaluation.judge_samples(store, eval_id, judge, runs=1, concurrency=4)
    failed = [row for row in store.eval_judgements(eval_id) if row["judge"] == "scoreless-judge"]
    assert len(failed) == 36 and all(row["cp"] is None for row in failed)  # recorded as failures, never as scores
    assert evaluation.report(store, eval_id, allow_partial=True)["provenance"]["judge"] != "scoreless-judge"  # the
    # report is the newest judge's that scored anything


def test_the_cli_says_which_flag_to_fix_when_the_judge_cannot_be_reached(sampled):
    import os

    store, _ = sampled
    result = subprocess.run([sys.executable, "-m", "studio.cli", "--home", str(store.home), "eval", "judge", "tiny",
                             "--judge-url", closed_port_url(), "--judge-model", "nobody-home", "--runs", "1"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "cannot be reached; check the network connection and --judge-url." in result.stderr
