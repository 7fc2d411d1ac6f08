"""The data wheel (paper section 3.1): captions, grid prompts, the teacher, grids and pairs, curation,
the parquet dataset, and `stages`, each stage reading the previous one's rows from the store."""
