"""The miniature of issue 6: a world with known identities where the whole DSD method runs on a CPU."""

from pathlib import Path

# The shipped miniature (light to import: the CLI's defaults need these without loading torch).
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "mini"
TEACHER, JUDGE, STUDENT = ASSETS / "teacher", ASSETS / "judge", ASSETS / "student"
PANEL = 64
GUTTER = 16  # 2 x 64 + 16 = 144: a multiple of 16 whose gutter falls on whole latent tokens
GRID = 2 * PANEL + GUTTER  # the teacher's 2x2 grids: the wheel's size on the embedded default
