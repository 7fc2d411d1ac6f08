"""DSD Studio: the Gradio UI. Layout and event wiring only; the work is done by `pipeline`."""
