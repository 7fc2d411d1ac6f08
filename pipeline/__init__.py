"""The method of Diffusion Self-Distillation, one subpackage per part of the paper, plus what they share.

- `generation`: the DSD transformer and pipeline, weights loading, modes, and `generate` (section 3.2);
- `wheel`: captions -> grid prompts -> teacher grids -> pairs -> curated verdicts -> parquet (section 3.1);
- `evaluation`: the DreamBench++ protocol and CLIP/DINO metrics (section 4);
- shared: `store` (all SQL), `jobs`, `providers` (LLM/VLM clients), `flow` (FLUX's flow matching),
  `images`, `errors`.

Plain Python, no UI. The parts use the shared modules and each other's public functions; nothing here
imports `train`, `mini` or `studio`.
"""
