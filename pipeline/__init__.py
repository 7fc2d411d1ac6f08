"""The method of Diffusion Self-Distillation, one subpackage per part of the paper, plus what they share.

- `generation`: the DSD transformer and pipeline, weights loading, modes, and `generate` (section 3.2);
- `wheel`: captions -> grid prompts -> teacher grids -> pairs -> curated verdicts -> parquet (section 3.1);
- `evaluation`: the DreamBench++ protocol and CLIP/DINO metrics (section 4);
- shared: `store` (all SQL), `jobs`, `providers` (LLM/VLM clients), `flow` (FLUX's flow matching),
  `images`, `errors`.

Plain Python, no UI. The parts use the shared modules and each other's public functions; nothing here
imports `train`, `mini` or `studio`.
"""

import logging

# torchao (the quantised memory modes) is imported by transformers and diffusers whenever it is installed, and
# at import it logs that its optional CUDA kernels, deprecated enum registrations and a serialisation helper
# are unavailable: lines about the libraries, not about anything a user did, that would precede every message
# of every command. Its errors still show.
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)
