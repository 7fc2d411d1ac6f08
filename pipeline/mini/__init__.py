"""The miniature of issue 6: a world with known identities where the whole DSD method runs on a CPU."""

from pathlib import Path

# The shipped miniature (light to import: the CLI's defaults need these without loading torch).
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "mini"
TEACHER, JUDGE, STUDENT = ASSETS / "teacher", ASSETS / "judge", ASSETS / "student"
