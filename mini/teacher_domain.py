"""The teacher-domain check: do the students keep identity on the teacher's own pictures?

The report's references are crisp renders, and the students only ever saw the teacher's soft panels.
This check draws its references from the teacher instead, through the project's data wheel, on
captions no student was trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mini import JUDGE, TEACHER
from mini.judge import IDENTITY, AttributeReader, read_attributes
from mini.recipe import SHIPPED_WHEEL, run_wheel, wheel_captions
from mini.report import STUDENTS, generate_row
from pipeline.images import load_image
from pipeline.wheel.dataset import read_pairs

Log = Callable[[str], None]


def teacher_domain(home: str | Path, teacher: str | Path = TEACHER, judge: str | Path = JUDGE,
                   students: dict | None = None, grids: int = 100, seed: int = 3, seeds: int = 3,
                   trained_on: tuple = SHIPPED_WHEEL, steps: int = 20, log: Log = print) -> dict:
    """Identity kept on the teacher's own pictures, drawn from captions no student was trained on.

    The wheel draws `grids` fresh grids from captions that are not among the students' training
    captions (`trained_on`, as (count, seed) of `wheel_captions`), the judge curates them, and each row
    draws the curated pairs' targets from their references and captions. `kept` is the share of the
    reference panel's five identity readings that the output's readings match, per evaluation seed;
    the pairs' own targets give the ceiling."""
    students = students or STUDENTS
    seen = {caption for count, caption_seed in trained_on for caption in wheel_captions(count, caption_seed)}
    fresh = [caption for caption in wheel_captions(4 * grids, seed) if caption not in seen][:grids]
    wheel = run_wheel(home, teacher, judge, steps=steps, log=log, captions=fresh)
    table = read_pairs(Path(home) / "curated.parquet").to_pylist()
    items = [{"reference": load_image(row["conditioning"]["bytes"]), "prompt": row["caption"]} for row in table]
    targets = [load_image(row["image"]["bytes"]) for row in table]
    model = AttributeReader.from_pretrained(str(judge)).eval()
    references = read_attributes(model, [item["reference"] for item in items])

    def kept(outputs) -> float:
        readings = read_attributes(model, outputs)
        return float(np.mean([[r[x] == ref[x] for x in IDENTITY] for r, ref in zip(readings, references)]))

    rows = [{"name": "curated_target", "kept": round(kept(targets), 4), "kept_std": 0.0}]
    for row in ("teacher_text", *students):
        runs = [kept(generate_row(row, items, k, teacher, students, steps)) for k in range(seeds)]
        rows.append({"name": row, "kept": round(float(np.mean(runs)), 4),
                     "kept_std": round(float(np.std(runs, ddof=1)) if seeds > 1 else 0.0, 4)})
        log(f"teacher domain: {row} keeps {rows[-1]['kept']:.3f} of the reference's identity readings")
    return {"grids": wheel["grids"], "pairs": len(items), "seeds": seeds, "rows": rows}
