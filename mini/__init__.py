"""The miniature: the whole DSD method, on a CPU, in a world whose identities are known exactly.

A client of the method: it brings its own world (`world`), teacher (`teacher`), attribute judge
(`judge`) and prompts (`prompts`), runs the project's own wheel and trainer on them to make its
weights (`recipe`), measures what they do (`report`, `teacher_domain`), and is the studio's embedded
default model (`embedded`). Nothing in `pipeline/` or `train/` imports it.
"""

from pathlib import Path

# The shipped miniature (light to import: the CLI's defaults need these without loading torch).
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "mini"
EXAMPLES_DIR = ASSETS.parent / "examples"  # the studio's example references (three held-out creatures, and photos)
TEACHER, JUDGE, STUDENT = ASSETS / "teacher", ASSETS / "judge", ASSETS / "student"
PANEL = 64
GUTTER = 16  # 2 x 64 + 16 = 144: a multiple of 16 whose gutter falls on whole latent tokens
GRID = 2 * PANEL + GUTTER  # the teacher's 2x2 grids: the wheel's size on the embedded default
