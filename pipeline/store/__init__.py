"""The studio's SQLite store: the one package that writes SQL.

Everything the studio and its job processes remember lives in `<home>/dsd.sqlite`. The tables are
in `schema.py`; `base.py` opens the file and reads and writes rows by table and primary key; each
area has its named queries in a module of its own (generations, the data wheel, jobs and training
runs, evaluations), and `Store` is all of them together. Callers ask by name (`store.pairs_to_judge()`,
`store.last_metric(run_id)`), never with a WHERE clause of their own.
"""

from pipeline.store.base import DB_FILENAME, DEFAULT_HOME, StoreBase, data_home, utc_now
from pipeline.store.evaluations import EvaluationQueries
from pipeline.store.generations import GenerationQueries, secret_keys
from pipeline.store.runs import RunQueries
from pipeline.store.schema import SCHEMA, TableSpec
from pipeline.store.wheel import REVIEW_DECISIONS, REVIEW_FILTERS, VERDICT_FILTERS, WheelQueries


class Store(GenerationQueries, WheelQueries, RunQueries, EvaluationQueries, StoreBase):
    """The data folder's database. Safe to share between threads and processes."""


__all__ = ["DB_FILENAME", "DEFAULT_HOME", "REVIEW_DECISIONS", "REVIEW_FILTERS", "SCHEMA", "Store", "TableSpec",
           "VERDICT_FILTERS", "data_home", "secret_keys", "utc_now"]
