"""The layout's rules, read from the source tree: imports run one way (studio -> mini -> train -> pipeline),
no module imports itself back through others, and SQL is written in the store only."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "train", "mini", "studio")
# What each layer may import of the project, itself included.
ALLOWED = {"pipeline": {"pipeline"}, "train": {"train", "pipeline"}, "mini": {"mini", "train", "pipeline"},
           "studio": set(PACKAGES)}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at any depth of the file (imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from a import b` imports a.b when that is a module, else a name of a
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES}
    return found


def test_imports_run_one_way():
    modules = project_modules()
    wrong = [f"{name} imports {imported}" for name, path in modules.items() for imported in imports_of(path, modules)
             if imported.split(".")[0] not in ALLOWED[name.split(".")[0]]]
    assert not wrong, wrong


def test_no_import_circles():
    modules = project_modules()
    graph = {name: {m for m in imports_of(path, modules) if m in modules and m != name} for name, path in modules.items()}
    circles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                circles.append(" -> ".join(trail[trail.index(other):] + [other]))
            elif other not in state:
                visit(other, trail + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


# What a piece of SQL looks like, as opposed to prose about it: a statement, or a clause with the
# punctuation, bound parameters and keyword pairs that sentences do not have.
SQL_PATTERNS = [re.compile(pattern, re.IGNORECASE) for pattern in (
    r"\bselect\s+(distinct\s+)?(\*|count\s*\(|[\w.]+\s*(,|\bas\b|\bfrom\b)).*\bfrom\s+[\w\[\"]+",
    r"\binsert\s+(or\s+\w+\s+)?into\s+[\w\[\"]+",
    r"\bupdate\s+[\w\[\"\]]+\s+set\s+[\w\[\"]+\s*=",
    r"\bdelete\s+from\s+[\w\[\"]+",
    r"\b[a-z_][\w.]*\s*(=|==|!=|<>|<=|>=|<|>|\blike|\bglob)\s*\?",  # a column against a bound parameter
    r"\b[a-z_][\w.]*\s*(=|!=|<>)\s*'[^']*'\s*($|\)|\band\b|\bor\b)",  # a column against a quoted literal
    r"\b[a-z_]\w*[._]\w+\s+is\s+(not\s+)?null\b",  # snake_case or table.column: a column, not a word
    r"\b(and|or|where)\s+[a-z_][\w.]*\s+is\s+(not\s+)?null\b",
    r"^\s*[a-z_][\w.]*\s+is\s+(not\s+)?null\s*$",
    r"\bin\s*\(\s*select\b",
    r"\border\s+by\s+[\w.]+(\s+(asc|desc)\b|\s*,\s*[\w.]+|\s*$)",
    r"\bjoin\s+[\w\"\[\]]+(\s+\w+)?\s+(on\s+[\w.]+\s*=|using\s*\()",
    r"\b(count\s*\(\s*\*\s*\)|coalesce\s*\(|json_each\s*\()",
)]
# Keyword arguments that carry SQL (sqlite-utils' names, and the store's old ones).
SQL_KEYWORDS = {"where", "where_args", "order_by", "sql", "select"}
STORE_ONLY_KEYWORDS = {"args"}  # a WHERE clause's arguments, when passed to the store


def sql_in(text: str) -> bool:
    return any(pattern.search(line) for line in text.splitlines() or [text] for pattern in SQL_PATTERNS)


def sql_outside_the_store(root: Path) -> list[str]:
    """Every string constant that is SQL, every call handing the store SQL keywords, and every import of an
    SQLite library, in the project's code outside pipeline/store/."""
    files = [root / "app.py", *(path for package in (*PACKAGES, "bench") for path in (root / package).rglob("*.py"))]
    found = []
    for path in files:
        if path.is_relative_to(root / "pipeline" / "store") or not path.is_file():
            continue
        where = lambda node: f"{path.relative_to(root)}:{node.lineno}"  # noqa: E731
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and sql_in(node.value):
                found.append(f"{where(node)} SQL text {node.value.strip()[:60]!r}")
            elif isinstance(node, ast.JoinedStr):  # an f-string: its literal parts together, each value a name
                text = "".join(part.value if isinstance(part, ast.Constant) else "x" for part in node.values)
                if sql_in(text) and not any(isinstance(part, ast.Constant) and sql_in(part.value) for part in node.values):
                    found.append(f"{where(node)} SQL f-string {text.strip()[:60]!r}")
            elif isinstance(node, ast.Call):
                to_store = isinstance(node.func, ast.Attribute) and "store" in ast.unparse(node.func.value).lower()
                keywords = SQL_KEYWORDS | (STORE_ONLY_KEYWORDS if to_store else set())
                found += [f"{where(node)} passes {keyword.arg}=" for keyword in node.keywords if keyword.arg in keywords]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{where(node)} imports {name}" for name in names if name.split(".")[0] in ("sqlite3", "sqlite_utils")]
    return found


def test_sql_only_in_the_store():
    found = sql_outside_the_store(ROOT)
    assert not found, "SQL outside pipeline/store/ (add a named query to the store instead):\n" + "\n".join(found)


def test_the_sql_check_tells_sql_from_prose():
    sql = ["select count(*) from grids where prompt_id = ?", "pairs.id not in (select pair_id from verdicts)",
           "verdicts.status = 'ok'", "duplicate_of is null", "eval_id = ? and metric = ?", "step desc",
           "run_id = ? and step % ? = 0", "delete from runs", "insert into jobs (kind) values (?)",
           "update jobs set status = ?", "left join reviews on reviews.pair_id = pairs.id", "coalesce(keep, 1) = 1"]
    prose = ["Pick where the weights are: a folder or a hub id", "select a run, then press Resume",
             "the base is null when the studio left it implicit", "in order by which they were drawn",
             "join the queue on the same devices", "delete it from the list to start afresh", "update the settings",
             "no evaluation 'x': `dsd eval sample --name NAME` makes one", "strength = 0.5 keeps half", "a = b?"]
    assert [text for text in sql if not sql_in(text)] == ["step desc"]  # a bare ORDER BY text: caught as order_by=
    assert [text for text in prose if sql_in(text)] == []
