"""Evaluation (paper section 4): DreamBench++ folders (`dreambench`), its VLM judge and templates
(`judge`), CLIP/DINO (`features`), and `stages` (sample, judge, metrics, report) over the store."""
