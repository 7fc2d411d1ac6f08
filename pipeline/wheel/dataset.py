"""Curated pairs to parquet and back, in the layout of the published `primecai/dsd_data`.

Columns: `image` (the target), `conditioning` (the reference), each a Hugging Face `datasets`
image struct `{bytes, path}` holding PNG bytes, and `caption`. A manifest beside the file
(`FILE.manifest.json`) says where every row came from: pair, grid, judge, verdict, review.
"""

import io
import json
import random
from pathlib import Path

import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import UserInputError
from pipeline.images import load_image
from pipeline.store import Store

CAPTION_STYLES = {"target": "caption_target", "instruction": "caption_instruction"}
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ROWS_PER_GROUP = 256


def _png(path: str) -> dict:
    with PIL.Image.open(path) as picture, io.BytesIO() as buffer:
        picture.convert("RGB").save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}


def export_pairs(store: Store, out: str | Path, caption_style: str = "target", reviewed_only: bool = False,
                 uncurated: bool = False, sample: int | None = None, seed: int = 0) -> int:
    """Write accepted pairs to `out` (parquet) and its manifest; returns the number of rows.
    `uncurated`: every judged pair, whatever its verdict (the ablation the paper's curation is measured by).
    `sample`: a seeded random subset of that many pairs, in their original order (a control set the size
    of a curated one)."""
    if caption_style not in CAPTION_STYLES:
        raise UserInputError(f"unknown caption style {caption_style!r}: use {' or '.join(CAPTION_STYLES)}")
    out = Path(out)
    if out.suffix != ".parquet":
        raise UserInputError(f"--out {out}: write a .parquet file")
    pairs = store.judged_pairs() if uncurated else store.accepted_pairs(reviewed_only)
    if sample is not None and sample < len(pairs):
        pairs = [pairs[k] for k in sorted(random.Random(seed).sample(range(len(pairs)), sample))]
    schema = pa.schema([("image", IMAGE_TYPE), ("conditioning", IMAGE_TYPE), ("caption", pa.string())])
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".parquet.tmp")
    with pq.ParquetWriter(temporary, schema) as writer:
        for start in range(0, len(pairs), ROWS_PER_GROUP):
            group = pairs[start:start + ROWS_PER_GROUP]
            writer.write_table(pa.table({
                "image": [_png(pair["target_path"]) for pair in group],
                "conditioning": [_png(pair["reference_path"]) for pair in group],
                "caption": [pair[CAPTION_STYLES[caption_style]] or "" for pair in group],
            }, schema=schema))
    temporary.replace(out)
    manifest = [{key: pair[key] for key in ("pair_id", "grid_id", "judge", "prompt_version", "confidence",
                                             "subject", "caption_target", "caption_instruction", "decision", "note")}
                for pair in pairs]
    Path(f"{out}.manifest.json").write_text(json.dumps({"caption_style": caption_style, "rows": manifest}, indent=1))
    return len(pairs)


def read_pairs(path: str | Path) -> pa.Table:
    """A DSD-style parquet file, checked: `image`, `conditioning` and `caption` columns."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"cannot open {path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise UserInputError(f"{path} is not a readable parquet file ({str(error).splitlines()[0]})") from None
    missing = {"image", "conditioning", "caption"} - set(table.column_names)
    if missing:
        raise UserInputError(
            f"{path} lacks column(s) {', '.join(sorted(missing))}; it has {', '.join(table.column_names)}: "
            "expected the primecai/dsd_data layout (image, conditioning, caption)"
        )
    return table


def _image_bytes(value) -> bytes:
    return value["bytes"] if isinstance(value, dict) else value


def check_rows(path: Path, rows: list[dict]) -> None:
    """Every row has two pictures and a caption, or nothing is imported: one line names the first bad row."""
    for index, row in enumerate(rows):
        for name in ("conditioning", "image"):
            data = _image_bytes(row[name])
            if not isinstance(data, bytes):
                raise UserInputError(f"{path}, row {index}: {name} holds {type(data).__name__}, not picture bytes: "
                                     "expected the primecai/dsd_data layout (image structs or PNG bytes)")
            try:
                load_image(data)  # reads the header first: a decompression bomb is refused before decoding
            except UserInputError as error:
                raise UserInputError(f"{path}, row {index}, {name}: {error}") from None
        if not isinstance(row["caption"], str) or not row["caption"].strip():
            raise UserInputError(f"{path}, row {index} has no caption ({row['caption']!r}): every pair needs the "
                                 "text it was made from; fill it in or drop the row")


def check_pairs_file(path: str | Path, rows: int = 4) -> None:
    """A quick look at a pairs file before a long job reads it all: its columns and its first `rows` rows."""
    path = Path(path)
    try:
        found = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise UserInputError(f"data {path} is not a readable parquet file ({str(error).splitlines()[0]})") from None
    missing = {"image", "conditioning", "caption"} - set(found.schema_arrow.names)
    if missing:
        raise UserInputError(f"data {path} lacks column(s) {', '.join(sorted(missing))}: expected the "
                             "primecai/dsd_data layout of `dsd wheel export` (image, conditioning, caption)")
    if not found.metadata.num_rows:
        raise UserInputError(f"data {path} has no rows: export some pairs first")
    first = next(found.iter_batches(batch_size=rows, columns=["image", "conditioning", "caption"]))
    check_rows(path, first.to_pylist())


def import_pairs(store: Store, path: str | Path) -> int:
    """Add the pairs of a DSD-style parquet file to the store as accepted pairs; returns how many were new.
    Every row is checked before the first is written."""
    path = Path(path).resolve()
    rows = read_pairs(path).to_pylist()
    check_rows(path, rows)
    folder = store.home / "wheel" / "imported" / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for index, row in enumerate(rows):
        paths = []
        for name in ("conditioning", "image"):
            target = folder / f"{index}-{name}.png"
            with PIL.Image.open(io.BytesIO(_image_bytes(row[name]))) as picture:
                picture.convert("RGB").save(target)
            paths.append(target)
        # Imported grids have no prompt, and NULLs never collide in a unique index: look the row up first.
        grid = store.grid_at(str(path), index) or store.get("grids", store.insert(
            "grids", {"prompt_id": None, "seed": index, "path": str(path), "teacher": f"import:{path.name}"}))
        panels = [{"idx": k, "row": 0, "col": k, "box": None, "path": str(p), "method": "imported", "problem": None}
                  for k, p in enumerate(paths)]
        new = store.add_grid_split(grid["id"], panels, [(0, 1)])
        pair = store.grid_pairs(grid["id"])[0]
        if pair["verdict_status"] is None:
            store.put("verdicts", {"pair_id": pair["pair_id"], "status": "ok", "same": 1, "confidence": 1.0,
                                   "caption_target": row["caption"], "caption_instruction": row["caption"],
                                   "judge": f"imported from {path.name}", "prompt_version": None})
        added += new
    return added
