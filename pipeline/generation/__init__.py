"""The generator: the DSD transformer (`model`), the pipeline (`pipeline`), weights, modes, and
`generate`, the one function behind the Generate tab and `dsd generate`."""
