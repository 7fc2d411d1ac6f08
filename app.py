"""Entry point for a Hugging Face Space and `python app.py`: the studio, configured from the environment.

On a ZeroGPU Space the `spaces` package is installed: each generation then runs under `spaces.GPU`,
which lends the GPU for the length of the call.
"""

import os

try:
    import spaces  # on ZeroGPU it must be imported before torch touches CUDA
except ImportError:
    spaces = None

from pipeline.generation.generate import Settings  # noqa: E402
from studio.app import launch  # noqa: E402

GPU_SECONDS = 120  # the longest one generation may hold a ZeroGPU slot


def main() -> None:
    gpu_wrapper = spaces.GPU(duration=GPU_SECONDS) if spaces is not None else None
    # A Space's container must listen on all interfaces; anywhere else the studio stays local.
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"
    launch(Settings.from_env(), host=host, gpu_wrapper=gpu_wrapper)


if __name__ == "__main__":
    main()
