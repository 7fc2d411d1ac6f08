"""Grid prompts in the world's own words: what the data wheel's prompt writer is for the miniature.

FLUX reads any caption; the miniature's teacher knows only its world's vocabulary. For a caption that
names a world subject ("a green dotted star wearing a crown"), the grid prompt names that subject and,
per panel, a scene and light of the world; any other caption goes to the writer it wraps.
"""

import re

import numpy as np

from mini import world
from pipeline.wheel.grids import Layout
from pipeline.wheel.prompts import DEFAULT_LAYOUT, OFFLINE_WRITER, GridPrompt, OfflinePromptWriter, Writer


def world_grid_prompt(caption: str, grid: Layout, contexts: list) -> GridPrompt:
    """A grid prompt for a subject of the world: the subject as the caption names it (before any comma),
    and per panel the scene and light of one of `contexts`."""
    subject = re.sub(r"^(a|an) ", "", " ".join(caption.split(",")[0].split()))
    panels = [world.short_context(context) for context in contexts]
    return GridPrompt(caption, str(grid), subject, panels, OFFLINE_WRITER)


class WorldPromptWriter:
    """`write(caption, layout) -> GridPrompt`: world prompts for world captions, `fallback`'s for the rest.
    Seeded like the offline templates, so a caption always gets the same panels."""

    def __init__(self, fallback: Writer | None = None, seed: int = 0):
        self.templates = OfflinePromptWriter(seed)
        self.fallback = fallback or self.templates.write

    def __call__(self, caption: str, layout: str = DEFAULT_LAYOUT) -> GridPrompt:
        if world.parse_subject(caption) is None:
            return self.fallback(caption, layout)
        grid = Layout.parse(layout)
        rng = np.random.default_rng(self.templates.caption_seed(caption, grid))
        return world_grid_prompt(caption, grid, world.grid_contexts(rng, grid.panels))
