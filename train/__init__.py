"""Training: the DSD LoRA fine-tune under accelerate, and the launcher that runs it as a job.

It writes weights with `pipeline.generation.weights.save_dsd_weights`, the format the generator loads.
"""
