"""What the tabs share: a user's error shown as one line, the id of a clicked table row, and the start and
stop of a tab's background jobs (wheel stages, evaluation stages); their table and log are `studio.views`'.

Jobs of one tab share a kind prefix ("wheel:", "eval:"); the rest of the kind is the stage.
"""

import logging
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from pipeline.errors import UserInputError
from pipeline.jobs import request_stop, start_job
from pipeline.providers import ProviderError
from pipeline.store import Store
from studio.job_settings import StageSettings

USER_ERRORS = (UserInputError, ProviderError)

log = logging.getLogger(__name__)


@contextmanager
def shown_as_gr_error(action: str):
    """User errors become their one-line message; anything else is logged and summarised."""
    try:
        yield
    except gr.Error:
        raise
    except USER_ERRORS as error:
        log.info("%s refused: %s", action, error)
        raise gr.Error(" ".join(str(error).split()), print_exception=False) from None
    except Exception:
        log.exception("%s failed", action)
        raise gr.Error(f"{action} failed with an internal error; the studio's log has the details",
                       print_exception=False) from None


def selected_id(event: gr.SelectData):
    """The first cell (the id) of the table row a person clicked."""
    return (event.row_value or [None])[0]


def start_stage(store: Store, settings: StageSettings) -> tuple[int, str]:
    """Start a stage as a job; returns its id and a message with the command it runs."""
    job_id = start_job(store, settings)
    return job_id, f"Started job {job_id}: `{settings.shell_line()}`"


def stop_job(store: Store, prefix: str, job_id, what: str) -> int:
    """Ask job `job_id` (blank: the newest running one of kind `prefix*`) to stop; returns its id."""
    jobs = store.jobs(prefix, job_id=int(job_id) if job_id else None, running=True, limit=1)
    if not jobs:
        raise UserInputError(f"no running {what} job{f' {int(job_id)}' if job_id else ''}: nothing to stop")
    request_stop(store, jobs[0]["id"])
    return jobs[0]["id"]


def inside_data_folder(what: str, path: str | Path | None, home: Path) -> str | None:
    """`path` as an absolute folder inside the data folder (a relative one is read from the data folder), or
    None for none. The studio writes only there; a folder elsewhere is the owner's to pass on the command
    line (`dsd train --out`, say), never a form's."""
    if not path:
        return None
    folder = (home / Path(path).expanduser()).resolve()
    if not folder.is_relative_to(home.resolve()):
        raise UserInputError(f"{what} {path} is outside the data folder: leave it blank (the data folder's own) "
                             "or give a folder inside it; elsewhere, start it from the command line")
    return str(folder)
