"""The studio's embedded default: the miniature, when a user names no model.

The method's code never picks a model by itself; the studio and the command line (the edge) fill in
what a user left blank with these, and hand the result down: the teacher as the base of generation,
training and grid drawing, the curated student as the DSD weights, the teacher's own grid size.
"""

from dataclasses import replace

from mini import GRID, STUDENT, TEACHER
from pipeline.generation.weights import ModelSpec

LABEL = "embedded miniature (64 px world creatures: teacher + curated student)"
TEACHER_NAME = "embedded miniature teacher"
CURATED = STUDENT / "curated"
GRID_SIZE = (GRID, GRID)


def with_embedded(spec: ModelSpec) -> ModelSpec:
    """`spec` with its blanks filled: no base is the miniature's teacher, and nothing named at all is the
    teacher with the curated student."""
    if not (spec.base or spec.dsd or spec.lora):
        return replace(spec, base=str(TEACHER), dsd=str(CURATED), label=spec.label or LABEL)
    return spec if spec.base else replace(spec, base=str(TEACHER))


def is_embedded(spec: ModelSpec) -> bool:
    return spec == with_embedded(ModelSpec(dtype=spec.dtype))
