"""The studio: one Blocks app whose tabs each wire a plain `pipeline` function to a form."""

import logging
import os
from collections.abc import Callable

import gradio as gr

from pipeline.generation.generate import LICENCE_NOTE, Settings
from studio import eval_tab, generate_tab, train_tab, wheel_tab
from studio.resolve import resolve_model

log = logging.getLogger(__name__)
LOCAL_HOST = "127.0.0.1"


def header(settings: Settings) -> str:
    model = resolve_model(settings.model).describe()
    advice = "" if any((settings.model.base, settings.model.dsd, settings.model.lora)) else (
        " (set DSD_BASE and DSD_WEIGHTS, or open *Model* below, to run FLUX.1-dev with DSD)"
    )
    return (
        "# DSD Studio\n"
        "Diffusion Self-Distillation on FLUX: give a reference picture and a prompt, "
        "get new pictures of the same subject.\n\n"
        f"**Model:** {model}{advice}\n\n"
        f"<small>{LICENCE_NOTE}</small>"
    )


def build_studio(settings: Settings, gpu_wrapper: Callable | None = None) -> gr.Blocks:
    """The studio for `settings`; `gpu_wrapper` (e.g. `spaces.GPU`) wraps the generation call."""
    with gr.Blocks(title="DSD Studio", analytics_enabled=False) as studio:
        gr.Markdown(header(settings), elem_id="studio-header")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                generate_tab.build(settings, gpu_wrapper)
            with gr.Tab("Data wheel", id="wheel"):
                wheel_tab.build(settings)
            with gr.Tab("Train", id="train"):
                train_tab.build(settings)
            with gr.Tab("Evaluate", id="evaluate"):
                eval_tab.build(settings)
    # One job at a time: a generation holds the whole GPU; the others wait in the queue and see it.
    return studio.queue(default_concurrency_limit=1)


def auth_from_env() -> tuple[str, str] | None:
    """(user, password) when DSD_PASSWORD is set; the password is never logged."""
    password = os.environ.get("DSD_PASSWORD")
    if not password:
        return None
    return os.environ.get("DSD_USER") or "dsd", password


def launch(
    settings: Settings,
    host: str = LOCAL_HOST,
    port: int = 7860,
    share: bool = False,
    gpu_wrapper: Callable | None = None,
):
    """Serve the studio until interrupted; local only unless `host` says otherwise."""
    auth = auth_from_env()
    if host != LOCAL_HOST and auth is None:
        log.warning("serving on %s without DSD_PASSWORD: anyone who can reach this port can use the studio", host)
    studio = build_studio(settings, gpu_wrapper)
    # Outputs live in the data folder, which may be outside the working directory.
    return studio.launch(
        server_name=host, server_port=port, share=share, auth=auth,
        allowed_paths=[str(settings.home.expanduser().resolve())],
    )
