"""DSD model, generator, weights, providers and store: plain Python, no UI."""
