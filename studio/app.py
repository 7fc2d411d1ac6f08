"""The studio: one Blocks app whose tabs each wire a plain `pipeline` function to a form."""

import logging
import os
from collections.abc import Callable

import gradio as gr

from pipeline.generation.generate import Settings
from studio import eval_tab, generate_tab, train_tab, wheel_tab
from studio.public import QUEUE_LIMIT, is_public, served_paths
from studio.views import header

log = logging.getLogger(__name__)
LOCAL_HOST = "127.0.0.1"


def build_studio(settings: Settings, gpu_wrapper: Callable | None = None, public: bool = False) -> gr.Blocks:
    """The studio for `settings`; `gpu_wrapper` (e.g. `spaces.GPU`) wraps the generation call. In public mode
    (`studio.public`) only the Generate tab is built: the others start processes or read server data."""
    with gr.Blocks(title="DSD Studio", analytics_enabled=False) as studio:
        title = gr.Markdown(header(settings, public), elem_id="studio-header")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                generate_tab.build(settings, title, gpu_wrapper, public)
            if not public:
                with gr.Tab("Data wheel", id="wheel"):
                    wheel_tab.build(settings)
                with gr.Tab("Train", id="train"):
                    train_tab.build(settings)
                with gr.Tab("Evaluate", id="evaluate"):
                    eval_tab.build(settings)
    # One job at a time: a generation holds the whole GPU; the others wait in the queue and see it.
    return studio.queue(default_concurrency_limit=1, max_size=QUEUE_LIMIT if public else None)


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
    public: bool = False,
    block: bool = True,
) -> gr.Blocks:
    """Serve the studio until interrupted (or, with `block=False`, in the background: close the returned
    app); local only unless `host` says otherwise. Public mode when asked (`public`), and whenever others
    can reach it without DSD_PASSWORD (`studio.public.is_public`)."""
    auth = auth_from_env()
    public = is_public(host, share, forced=public)
    if public:
        log.warning("public mode: generation only, from uploads; set DSD_PASSWORD for the whole studio")
    elif host != LOCAL_HOST and auth is None:
        log.warning("serving on %s without DSD_PASSWORD: anyone who can reach this port can use the studio", host)
    studio = build_studio(settings, gpu_wrapper, public)
    # Locally, outputs are served from the data folder (which may be outside the working directory), its
    # database never; in public mode nothing of it: pictures reach visitors as copies in Gradio's cache.
    allowed, blocked = served_paths(settings.home, public)
    studio.launch(server_name=host, server_port=port, share=share, auth=auth, allowed_paths=allowed,
                  blocked_paths=blocked, prevent_thread_lock=not block, quiet=not block)
    return studio
