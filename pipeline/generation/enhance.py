"""Prompt enhancement: an LLM rewrites a short request into the detailed prompt a mode's model reads."""

from PIL import Image

from pipeline.errors import UserInputError
from pipeline.providers import Provider, ProviderError

IDENTITY_INSTRUCTION = (
    "You write prompts for an image generator that keeps the identity of the subject shown in a "
    "reference image. Rewrite the user's short request into one detailed paragraph (at most 120 "
    "words) describing the target image: the same subject, with its distinctive features "
    "(kind, shape, colors, materials, markings, text or logos), placed in the scene the user asks "
    "for, with setting, pose, composition, lighting and style. If no image is attached, describe "
    "the subject from the request alone. Describe only the final image; do not mention the "
    "reference, the user or these instructions. Reply with the prompt only."
)
RELIGHT_INSTRUCTION = (
    "You write prompts for an image generator that relights a photo and changes nothing else. "
    "Rewrite the user's short lighting request into one detailed paragraph (at most 120 words) "
    "describing the same subject, pose, framing and background as in the reference image, now "
    "under the requested lighting: light sources and their direction, color temperature, "
    "intensity, shadows, highlights, reflections and mood. Do not add, remove or restyle "
    "anything in the scene. Reply with the prompt only."
)
INSTRUCT_INSTRUCTION = (
    "You write prompts for an image generator that edits a reference image. Turn the user's edit "
    "instruction into one detailed paragraph (at most 120 words) describing the resulting image "
    "after the edit: the changed parts as they now look, and the subject and everything the "
    "instruction does not touch as they are in the reference. Write a description of the "
    "result, not an instruction: no 'add', 'change', 'make' or 'replace'. Reply with the prompt "
    "only."
)
ENHANCE_INSTRUCTIONS = {
    "identity": IDENTITY_INSTRUCTION,
    "relight": RELIGHT_INSTRUCTION,
    "instruct": INSTRUCT_INSTRUCTION,
}


def enhance_prompt(
    provider: Provider, prompt: str, image: Image.Image | None = None, mode: str = "identity"
) -> str:
    """Rewrite a short user prompt into a detailed description of the target image."""
    if mode not in ENHANCE_INSTRUCTIONS:
        raise UserInputError(
            f"unknown enhancement mode {mode!r}: use one of {', '.join(ENHANCE_INSTRUCTIONS)}."
        )
    if not prompt.strip():
        raise UserInputError("the prompt is empty: write a few words about the image you want.")
    images = [image] if image is not None else []
    completion = provider.complete(prompt.strip(), images, system=ENHANCE_INSTRUCTIONS[mode])
    text = completion.text.strip()
    if not text:
        raise ProviderError(
            f"{provider.name}:{provider.model} returned an empty prompt; "
            "try again or generate with the prompt as written."
        )
    return text
