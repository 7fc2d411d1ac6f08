"""The data wheel's queries: captions -> grid prompts -> grids -> panels -> pairs -> verdicts -> reviews.

Every stage writes its rows with `add` (a row whose unique key is there already is skipped) and
finds its work with one of the "to do" queries below, so a rerun, or a run after a crash, does only
what is left.
"""

import json
from typing import Any

from pipeline.store.base import StoreBase, encode_row, utc_now

# The review filters: the judge's verdict, a person's decision, and where the two disagree.
VERDICT_FILTERS = {
    "all": None,
    "same": "verdicts.status = 'ok' and verdicts.same = 1",
    "not same": "verdicts.status = 'ok' and verdicts.same = 0",
    "failed": "verdicts.status = 'failed'",
    "none yet": "verdicts.pair_id is null",
}
REVIEW_DECISIONS = {"accept": "accepted", "reject": "rejected", "flag": "flagged"}
REVIEW_FILTERS = {"all": None, "unreviewed": "reviews.decision is null",
                  **{label: f"reviews.decision = '{decision}'" for decision, label in REVIEW_DECISIONS.items()}}
DISAGREEMENT = ("verdicts.status = 'ok' and ((verdicts.same = 1 and reviews.decision = 'reject') "
                "or (verdicts.same = 0 and reviews.decision = 'accept'))")
JUDGED = "verdicts.status = 'ok'"
ACCEPTED = "verdicts.status = 'ok' and verdicts.same = 1 and coalesce(reviews.decision, '') != 'reject'"

PAIR_VIEW = """
select pairs.id as pair_id, pairs.grid_id, a.path as reference_path, b.path as target_path,
       grids.path as grid_path, grid_prompts.text as grid_prompt, grid_prompts.subject as prompt_subject,
       verdicts.status as verdict_status, verdicts.same, verdicts.confidence, verdicts.subject,
       verdicts.description_a, verdicts.description_b, verdicts.reasoning, verdicts.caption_target,
       verdicts.caption_instruction, verdicts.judge, verdicts.prompt_version, verdicts.error as verdict_error,
       reviews.decision, reviews.note
from pairs
join panels a on a.id = pairs.panel_a
join panels b on b.id = pairs.panel_b
join grids on grids.id = pairs.grid_id
left join grid_prompts on grid_prompts.id = grids.prompt_id
left join verdicts on verdicts.pair_id = pairs.id
left join reviews on reviews.pair_id = pairs.id"""


class WheelQueries(StoreBase):
    # each stage's work: the previous stage's rows it has not handled yet, oldest first

    def captions_to_prompt(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Kept captions (or not filtered) that have no grid prompt yet."""
        return self._rows("captions", "coalesce(keep, 1) = 1 and id not in (select caption_id from grid_prompts)",
                          limit=limit)

    def prompts_to_draw(self, per_prompt: int) -> list[dict[str, Any]]:
        """Grid prompts, duplicates aside, with fewer than `per_prompt` grids."""
        return self._rows("grid_prompts", "duplicate_of is null and "
                          "(select count(*) from grids where prompt_id = grid_prompts.id) < ?", [per_prompt])

    def grids_to_split(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Grids not cut into panels yet."""
        return self._rows("grids", "id not in (select grid_id from panels)", limit=limit)

    def pairs_to_judge(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Pairs (with their pictures) that have no verdict, or only a failed one."""
        return self._pair_pictures("pairs.id not in (select pair_id from verdicts where status = 'ok')", limit=limit)

    # curation's claims: a pair is judged by one curation at a time, and never again once it has a verdict

    def claim_pair(self, pair_id: int, owner: str, host: str, pid: int) -> bool:
        """Claim a pair for `owner`; False when it has a verdict now or another curation holds it."""
        with self._connect() as db, db.conn:
            return db.conn.execute(
                "insert into pair_claims (pair_id, owner, host, pid, claimed_at) select ?, ?, ?, ?, ? "
                "where not exists (select 1 from verdicts where pair_id = ? and status = 'ok') "
                "on conflict (pair_id) do nothing", [pair_id, owner, host, pid, utc_now(), pair_id]).rowcount == 1

    def release_claims(self, owner: str, pair_id: int | None = None) -> None:
        """Drop `owner`'s claim on one pair, or all of them."""
        where, args = ("owner = ?", [owner]) if pair_id is None else ("owner = ? and pair_id = ?", [owner, pair_id])
        with self._connect() as db, db.conn:
            db.conn.execute(f"delete from pair_claims where {where}", args)

    def record_verdict(self, verdict: dict[str, Any], owner: str, run_id: int, run: dict[str, Any]) -> None:
        """A pair's verdict, the counts and spend so far of the curation run that made it (its `stage_runs` row)
        and the release of its claim, in one transaction: a run killed at any moment leaves them in step."""
        with self._writing() as db:
            db["verdicts"].upsert(encode_row("verdicts", verdict), pk="pair_id")
            db["stage_runs"].update(run_id, encode_row("stage_runs", run))
            db.conn.execute("delete from pair_claims where owner = ? and pair_id = ?", [owner, verdict["pair_id"]])

    def claim_owners(self) -> list[dict[str, Any]]:
        """Each curation holding claims: owner, host, pid and its oldest claim."""
        return self._query("select owner, host, pid, min(claimed_at) as claimed_at from pair_claims group by owner")

    # rows of one stage

    def grid_prompts(self, duplicates: bool = False) -> list[dict[str, Any]]:
        """The grid prompts, oldest first; those marked as repeating an earlier one only when asked."""
        return self._rows("grid_prompts", None if duplicates else "duplicate_of is null")

    def has_grid(self, prompt_id: int, seed: int) -> bool:
        return bool(self._count("grids", "prompt_id = ? and seed = ?", [prompt_id, seed]))

    def grid_at(self, path: str, seed: int) -> dict[str, Any] | None:
        """The grid drawn (or imported) to `path` at `seed`, if there is one."""
        return self._first("grids", "path = ? and seed = ?", [path, seed])

    def add_grid_split(self, grid_id: int, panels: list[dict[str, Any]], pairs: list[tuple[int, int]]) -> int:
        """A grid's panels and its pairs (by panel index) in one transaction: all or nothing. Returns new pairs."""
        with self._writing() as db:
            db["panels"].insert_all([encode_row("panels", {**panel, "grid_id": grid_id}) for panel in panels], ignore=True)
            ids = {row["idx"]: row["id"] for row in db["panels"].rows_where("grid_id = ?", [grid_id])}
            before = db.conn.total_changes
            db["pairs"].insert_all(
                [{"grid_id": grid_id, "panel_a": ids[a], "panel_b": ids[b]} for a, b in pairs], ignore=True
            )
            return db.conn.total_changes - before

    # pairs with their pictures, verdict and review (the review view, the export)

    def grid_pairs(self, grid_id: int) -> list[dict[str, Any]]:
        return self._pair_pictures("pairs.grid_id = ?", [grid_id])

    def pairs_by_id(self, pair_ids: list[int]) -> list[dict[str, Any]]:
        return self._pair_pictures("pairs.id in (select value from json_each(?))", [json.dumps(list(pair_ids))])

    def judged_pairs(self) -> list[dict[str, Any]]:
        """Pairs the judge has a verdict on, whatever it said (an uncurated control draws from these)."""
        return self._pair_pictures(JUDGED)

    def accepted_pairs(self, reviewed_only: bool = False) -> list[dict[str, Any]]:
        """Pairs the judge called the same subject and no person rejected (only accepted ones if asked)."""
        return self._pair_pictures(ACCEPTED + (" and reviews.decision = 'accept'" if reviewed_only else ""))

    def review_queue(self, verdict: str = "all", min_confidence: float = 0, review: str = "all",
                     disagreement: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Pairs for a person to review, by the judge's verdict, its confidence, the review state, and
        whether the person and the judge disagree. Unknown filter names raise ValueError."""
        if verdict not in VERDICT_FILTERS or review not in REVIEW_FILTERS:
            raise ValueError(f"verdict filter must be one of {', '.join(VERDICT_FILTERS)}; "
                             f"review filter one of {', '.join(REVIEW_FILTERS)}")
        clauses = [c for c in (VERDICT_FILTERS[verdict], REVIEW_FILTERS[review]) if c]
        clauses += [DISAGREEMENT] if disagreement else []
        args = []
        if min_confidence:
            clauses.append("coalesce(verdicts.confidence, 0) >= ?")
            args.append(float(min_confidence))
        return self._pair_pictures(" and ".join(f"({c})" for c in clauses) or None, args, limit=limit)

    def wheel_counts(self) -> dict[str, Any]:
        """Rows per stage and the rates `dsd wheel stats` reports."""
        counts = {table: self._count(table) for table in ("captions", "grid_prompts", "grids", "panels", "pairs", "reviews")}
        counts["duplicate_prompts"] = self._count("grid_prompts", "duplicate_of is not null")
        counts["usable_panels"] = self._count("panels", "problem is null")
        counts["verdicts"] = self._count("verdicts", "status = 'ok'")
        counts["failed_verdicts"] = self._count("verdicts", "status != 'ok'")
        counts["same"] = self._count("verdicts", "status = 'ok' and same = 1")
        counts["grids_with_accepted_pair"] = self._scalar(
            "select count(distinct pairs.grid_id) from pairs join verdicts on verdicts.pair_id = pairs.id "
            f"left join reviews on reviews.pair_id = pairs.id where {ACCEPTED}"
        )
        counts["reviewed_with_verdict"] = self._scalar(
            "select count(*) from reviews join verdicts using (pair_id) "
            "where verdicts.status = 'ok' and reviews.decision in ('accept', 'reject')"
        )
        counts["review_agrees"] = self._scalar(
            "select count(*) from reviews join verdicts using (pair_id) where verdicts.status = 'ok' and "
            "((reviews.decision = 'accept' and verdicts.same = 1) or (reviews.decision = 'reject' and verdicts.same = 0))"
        )
        return counts

    # the curation cache: replies of paid judges by request fingerprint, so that a rerun repeats no call

    def cache_get(self, key: str) -> Any:
        found = self._first("api_cache", "key = ?", [key])
        return found["value"] if found else None

    def cache_put(self, key: str, value: Any) -> None:
        self.put("api_cache", {"key": key, "value": value, "created_at": utc_now()})

    def _pair_pictures(self, where: str | None = None, args: list | None = None,
                       limit: int | None = None) -> list[dict[str, Any]]:
        query = PAIR_VIEW + (f" where {where}" if where else "") + " order by pairs.id"
        query += f" limit {int(limit)}" if limit is not None else ""
        return self._query(query, args)

