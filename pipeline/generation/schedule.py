"""Which denoising steps run true guidance; the others run one pass, the full prediction.

`all` (the default): every step. `release`: the authors' released code, exactly: true guidance only when
the image scale is above 1 (a text scale alone does nothing there), and only from the third step on
(step index 2, their `no_cfg_until_timestep = 2`), each pass its own forward as there, so the pictures
are the release's bit for bit. `START:END`: a range, as shares of the steps when a
number has a decimal point (`0.1:0.8`) or as step indices otherwise (`2:28`); the end is excluded, as in
a Python slice, and either end may be left out (`:0.5`, `2:`). OmniGen2 limits its guidance this way:
the first steps lay out the picture and the last ones only sharpen it, so guidance matters most between.
"""

import math
import re
from dataclasses import dataclass

from pipeline.errors import UserInputError

ALL, RELEASE = "all", "release"
HELP = ("all, release, or START:END as shares of the steps (0.1:0.8) or step numbers (2:28; the end is "
        "excluded)")
_NUMBER = re.compile(r"^\d+(\.\d*)?$|^\.\d+$")


@dataclass(frozen=True)
class GuidanceSteps:
    """A range of steps `[start, end)`, in shares of the steps or in step indices; `release`: the release's rule."""

    start: float = 0
    end: float | None = None  # None: to the last step
    shares: bool = False
    release: bool = False

    @classmethod
    def parse(cls, text: "str | GuidanceSteps | None") -> "GuidanceSteps":
        """`all`, `release` or `START:END`; a bad value is one `UserInputError` that says what to write."""
        if isinstance(text, GuidanceSteps):
            return text
        text = (text or ALL).strip().lower()
        if text == ALL:
            return cls()
        if text == RELEASE:
            return cls(start=2, release=True)
        parts = text.split(":")
        if len(parts) != 2 or not all(not part or _NUMBER.match(part) for part in parts):
            raise UserInputError(f"guidance steps must be {HELP}, got {text!r}")
        shares = "." in text
        start = float(parts[0]) if parts[0] else 0.0
        end = float(parts[1]) if parts[1] else None
        if shares and (start > 1 or (end is not None and end > 1)):
            raise UserInputError(f"guidance steps as shares run from 0 to 1 (0.1:0.8), got {text!r}")
        if end is not None and end <= start:
            raise UserInputError(f"guidance steps {text!r} end before they start: write START:END with START < END")
        return cls(start, end, shares)

    def guided(self, steps: int, image_scale: float) -> range:
        """The indices of the steps, out of `steps`, that run true guidance."""
        if self.release and not image_scale > 1:
            return range(0)
        if self.shares:
            return range(_nearest(self.start * steps), steps if self.end is None else _nearest(self.end * steps))
        end = steps if self.end is None else min(steps, int(self.end))
        return range(min(int(self.start), end), end)

    def __str__(self) -> str:
        if self.release:
            return RELEASE
        if self.start == 0 and self.end is None:
            return ALL
        number = (lambda x: f"{x:g}" if "." in f"{x:g}" else f"{x:g}.0") if self.shares else (lambda x: str(int(x)))
        return f"{number(self.start) if self.start else ''}:{'' if self.end is None else number(self.end)}"


def _nearest(x: float) -> int:
    return math.floor(x + 0.5)
