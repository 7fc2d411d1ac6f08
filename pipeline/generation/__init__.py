"""The generator: the DSD transformer (`model`), the pipeline (`pipeline`), weights, modes, prompt
enhancement (`enhance`), and `generate`, the one function behind the Generate tab and `dsd generate`."""
