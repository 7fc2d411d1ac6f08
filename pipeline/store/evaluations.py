"""Evaluations (DreamBench++ protocol): an evaluation is one model on one benchmark; its samples, the
judge's scores per run and the feature metrics are each unique per item, so reruns skip finished work."""

from collections.abc import Iterable
from typing import Any

from pipeline.store.base import StoreBase, encode_row, utc_now


class EvaluationQueries(StoreBase):
    def eval_named(self, name: str) -> dict[str, Any] | None:
        return self._first("evals", "name = ?", [name])

    def find_eval(self, key: int | str) -> dict[str, Any] | None:
        """The evaluation whose id or name is `key`."""
        return self._first("evals", "id = ? or name = ?", [str(key), str(key)])

    def eval_names(self) -> list[str]:
        """The evaluations' names, newest first."""
        return [row["name"] for row in self._rows("evals", order_by="id desc")]

    def eval_samples(self, eval_id: int) -> list[dict[str, Any]]:
        """The evaluation's samples in the order they were drawn (the benchmark's)."""
        return self._rows("eval_samples", "eval_id = ?", [eval_id])

    def count_eval_samples(self, eval_id: int) -> int:
        return self._count("eval_samples", "eval_id = ?", [eval_id])

    def eval_judgements(self, eval_id: int, item_id: str | None = None, k: int | None = None) -> list[dict[str, Any]]:
        """The evaluation's judgements (of one sample, given its item and k), oldest first."""
        if item_id is None:
            return self._rows("eval_judgements", "eval_id = ?", [eval_id])
        return self._rows("eval_judgements", "eval_id = ? and item_id = ? and k = ?", [eval_id, item_id, k])

    def count_judgements(self, eval_id: int) -> int:
        return self._count("eval_judgements", "eval_id = ?", [eval_id])

    def scored_judgements(self, eval_id: int, judge: str, templates_hash: str) -> list[dict[str, Any]]:
        """The judgements this judge and these templates gave both scores (failed ones are judged again)."""
        return self._rows("eval_judgements", "eval_id = ? and judge = ? and templates_hash = ? "
                          "and cp is not null and pf is not null", [eval_id, judge, templates_hash])

    def debiased_scores(self, eval_id: int, judge: str, templates_prefix: str) -> list[int]:
        """The de-biased CP scores of one judge, by the templates hash or its first characters."""
        rows = self._rows("eval_judgements", "eval_id = ? and judge = ? and substr(templates_hash, 1, ?) = ? "
                          "and cp_debiased is not null", [eval_id, judge, len(templates_prefix), templates_prefix])
        return [row["cp_debiased"] for row in rows]

    def replace_judgement(self, row: dict[str, Any]) -> None:
        """Record a judgement, replacing this judge's earlier one of the same sample, run and templates."""
        with self._writing() as db:
            # INSERT OR REPLACE: the unique key (eval, item, k, run, judge, templates) drops the old row
            db["eval_judgements"].insert(encode_row("eval_judgements", {"created_at": utc_now(), **row}), replace=True)

    def replace_eval_metrics(self, eval_id: int, metrics: Iterable[str], rows: list[dict[str, Any]]) -> int:
        """The values of `metrics` for every sample, replacing earlier ones in one transaction; returns rows added."""
        with self._writing() as db:
            for metric in metrics:
                db["eval_metrics"].delete_where("eval_id = ? and metric = ?", [eval_id, metric])
            before = db.conn.total_changes
            db["eval_metrics"].insert_all([{"created_at": utc_now(), **row} for row in rows], ignore=True)
            return db.conn.total_changes - before

    def metric_values(self, eval_id: int, metric: str) -> list[float]:
        return [row["value"] for row in self._rows("eval_metrics", "eval_id = ? and metric = ?", [eval_id, metric])]
