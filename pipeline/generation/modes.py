"""Generation modes: identity, relight and instruct. Each is a preset, not a separate code path."""

from dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.generation.memory import MEMORY_MODES  # noqa: F401 (where and in what precision the model lives: memory.py)


@dataclass(frozen=True)
class ModePreset:
    name: str
    label: str
    template: str  # how the user's prompt becomes the caption the model was trained on
    image_guidance: float
    text_guidance: float
    example: str
    hint: str

    def prompt(self, text: str) -> str:
        return self.template.format(prompt=text.strip())


MODES = {
    preset.name: preset
    for preset in (
        ModePreset(
            "identity", "Identity", "{prompt}", 1.0, 1.0,
            "a photo of the cat sleeping on a pile of books in a library",
            "Describe the new picture: the subject stays the same, everything else can change.",
        ),
        ModePreset(
            "relight", "Relighting", "the same subject in the same scene, {prompt}", 1.5, 1.0,
            "lit by warm sunset light from the left, long soft shadows",
            "Describe the light; the subject and the layout are kept.",
        ),
        ModePreset(
            "instruct", "Instruction", "{prompt}", 1.0, 1.5,
            "make it a watercolor painting",
            "Say what to change, as an instruction.",
        ),
    )
}


def get_mode(name: str) -> ModePreset:
    if name not in MODES:
        raise UserInputError(f"unknown mode {name!r}: use one of {', '.join(MODES)}")
    return MODES[name]
