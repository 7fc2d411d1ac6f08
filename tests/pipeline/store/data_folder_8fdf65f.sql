-- A data folder as commit 8fdf65f wrote it: its own Store created the tables, and its wheel, jobs and
-- evaluation code wrote the rows (a generation; a wheel run of two captions, one grid cut into two panels,
-- two pairs, one judged and reviewed; a training run recorded without a base, stopped after one step; an
-- evaluation of two samples, judged once). Dumped with sqlite3's iterdump; {HOME} stands for the data
-- folder and {REPO} for the checkout. The rows name pictures under {HOME} that the test draws.
BEGIN TRANSACTION;
CREATE TABLE "api_cache" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT,
   "created_at" TEXT
);
INSERT INTO "api_cache" VALUES('6fa1fdd51a20585209f5b5b9827d8876a8f569171c3e9cf8751297740b6fef2f','{"same": false, "confidence": 0.643, "subject": "unknown (no VLM: offline similarity only)", "description_a": "", "description_b": "", "reasoning": "similarity score 0.500 < threshold 0.700 (colour histogram, thumbnail correlation, edge orientations)", "caption_target": "the same subject, another view", "caption_instruction": "show the same subject from another view", "judge": "offline-similarity (stand-in, not a VLM)", "prompt_version": "curate-v1", "input_tokens": 0, "output_tokens": 0}','2026-12-02T05:05:36.473+00:00');
INSERT INTO "api_cache" VALUES('old-key','{"same": true}','2026-12-02T05:05:36.563+00:00');
CREATE TABLE "captions" (
   "id" INTEGER PRIMARY KEY,
   "text" TEXT NOT NULL,
   "source" TEXT,
   "keep" INTEGER,
   "filter_reason" TEXT,
   "created_at" TEXT
);
INSERT INTO "captions" VALUES(1,'cartoon fox character with a blue scarf and oversized round glasses, flat vector illustration','builtin',NULL,NULL,'2026-12-02T05:05:36.338+00:00');
INSERT INTO "captions" VALUES(2,'cute cartoon penguin mascot waving, sticker design on white background','builtin',NULL,NULL,'2026-12-02T05:05:36.338+00:00');
CREATE TABLE "eval_judgements" (
   "id" INTEGER PRIMARY KEY,
   "eval_id" INTEGER REFERENCES "evals"("id"),
   "item_id" TEXT,
   "k" INTEGER,
   "run" INTEGER,
   "cp" INTEGER,
   "pf" INTEGER,
   "cp_debiased" INTEGER,
   "judge" TEXT,
   "endpoint" TEXT,
   "templates_hash" TEXT,
   "templates_source" TEXT,
   "replies" TEXT,
   "errors" TEXT,
   "created_at" TEXT
);
INSERT INTO "eval_judgements" VALUES(1,1,'live_subject/animal/00#0',0,0,3,4,2,'old-judge','http://127.0.0.1:9/v1','7185dfb230abdfb068e99804b898519591e26b31afaa1cf67b4481f597352624','ours','{"cp": ["looks alike"], "pf": ["follows"]}',NULL,'2026-12-02T05:05:36.718+00:00');
INSERT INTO "eval_judgements" VALUES(2,1,'live_subject/animal/00#1',0,0,2,4,2,'old-judge','http://127.0.0.1:9/v1','7185dfb230abdfb068e99804b898519591e26b31afaa1cf67b4481f597352624','ours','{"cp": ["looks alike"], "pf": ["follows"]}',NULL,'2026-12-02T05:05:36.782+00:00');
CREATE TABLE "eval_metrics" (
   "id" INTEGER PRIMARY KEY,
   "eval_id" INTEGER REFERENCES "evals"("id"),
   "item_id" TEXT,
   "k" INTEGER,
   "metric" TEXT,
   "value" REAL,
   "created_at" TEXT
);
INSERT INTO "eval_metrics" VALUES(1,1,'live_subject/animal/00#0',0,'clip_i',0.5,'2026-12-02T05:05:36.738+00:00');
INSERT INTO "eval_metrics" VALUES(2,1,'live_subject/animal/00#1',0,'clip_i',0.6,'2026-12-02T05:05:36.806+00:00');
CREATE TABLE "eval_samples" (
   "id" INTEGER PRIMARY KEY,
   "eval_id" INTEGER REFERENCES "evals"("id"),
   "item_id" TEXT,
   "k" INTEGER,
   "subject_id" TEXT,
   "category" TEXT,
   "kind" TEXT,
   "prompt" TEXT,
   "reference" TEXT,
   "path" TEXT,
   "seed" INTEGER,
   "created_at" TEXT
);
INSERT INTO "eval_samples" VALUES(1,1,'live_subject/animal/00#0',0,'live_subject/animal/00','animal','photorealistic','a tabby cat sitting on a windowsill in the morning sun','{REPO}/assets/dreambench-mini/images/live_subject/animal/00.jpg','{HOME}/evals/1/samples/live_subject/animal/00/0-0.png',0,'2026-12-02T05:05:36.698+00:00');
INSERT INTO "eval_samples" VALUES(2,1,'live_subject/animal/00#1',0,'live_subject/animal/00','animal','photorealistic','a tabby cat curled up on a wool blanket on a sofa','{REPO}/assets/dreambench-mini/images/live_subject/animal/00.jpg','{HOME}/evals/1/samples/live_subject/animal/00/1-0.png',0,'2026-12-02T05:05:36.758+00:00');
CREATE TABLE "evals" (
   "id" INTEGER PRIMARY KEY,
   "name" TEXT,
   "benchmark" TEXT,
   "fingerprint" TEXT,
   "model" TEXT,
   "per_prompt" INTEGER,
   "seed" INTEGER,
   "size" INTEGER,
   "steps" INTEGER,
   "created_at" TEXT
);
INSERT INTO "evals" VALUES(1,'old-eval','{REPO}/assets/dreambench-mini','1b72fe88d1b5b10a0991c2428a5befe0916d967197bb2a0792852543115e2b04','{"base": null, "dsd": null, "run": null}',1,0,32,2,'2026-12-02T05:05:36.672+00:00');
CREATE TABLE "generations" (
   "id" INTEGER PRIMARY KEY,
   "created_at" TEXT NOT NULL,
   "mode" TEXT,
   "prompt" TEXT,
   "prompt_used" TEXT,
   "model" TEXT,
   "params" TEXT,
   "seed" INTEGER,
   "num_images" INTEGER,
   "reference_path" TEXT,
   "output_paths" TEXT,
   "timings" TEXT,
   "status" TEXT NOT NULL,
   "error" TEXT,
   "notices" TEXT
);
INSERT INTO "generations" VALUES(1,'2026-12-02T05:05:36.323+00:00','subject','the toy on a beach','the toy on a beach','embedded','{"steps": 2, "guidance": 3.5, "seeds": [7], "size": [32, 32]}',7,1,NULL,'["{HOME}/outputs/1-7.png"]','{"total_s": 1.5}','ok',NULL,'[]');
CREATE TABLE "grid_prompts" (
   "id" INTEGER PRIMARY KEY,
   "caption_id" INTEGER REFERENCES "captions"("id"),
   "layout" TEXT,
   "subject" TEXT,
   "panels" TEXT,
   "text" TEXT,
   "writer" TEXT,
   "prompt_version" TEXT,
   "duplicate_of" INTEGER,
   "created_at" TEXT
);
INSERT INTO "grid_prompts" VALUES(1,1,'2x2','cartoon fox character','["the cartoon fox character walking toward the camera, with eyes closed, in a rainy park, harsh midday sun, medium shot", "the cartoon fox character seen in profile, with a calm neutral expression, on a city street, golden hour sunlight, overhead view", "the cartoon fox character reaching up with one arm, looking curious, on a mountain ridge, rim light from behind, macro detail shot", "the cartoon fox character sitting cross-legged, smiling warmly, on a sandy beach, neon glow, shot from a distance with a telephoto lens"]','A grid of 4 panels (2 rows, 2 columns) separated by thin white gutters, showing the identical cartoon fox character in every panel. Panel 1: The cartoon fox character walking toward the camera, with eyes closed, in a rainy park, harsh midday sun, medium shot. Panel 2: The cartoon fox character seen in profile, with a calm neutral expression, on a city street, golden hour sunlight, overhead view. Panel 3: The cartoon fox character reaching up with one arm, looking curious, on a mountain ridge, rim light from behind, macro detail shot. Panel 4: The cartoon fox character sitting cross-legged, smiling warmly, on a sandy beach, neon glow, shot from a distance with a telephoto lens.','offline-templates','grid-prompt-1',NULL,'2026-12-02T05:05:36.376+00:00');
INSERT INTO "grid_prompts" VALUES(2,2,'2x2','cute cartoon penguin mascot','["the cute cartoon penguin mascot jumping in mid-air, looking surprised, in a neon-lit alley, cool blue twilight, three-quarter view", "the cute cartoon penguin mascot sitting cross-legged, smiling warmly, on a mountain ridge, warm lamplight, shallow depth of field", "the cute cartoon penguin mascot waving at the viewer, looking curious, on a wooden porch, soft morning light, wide shot", "the cute cartoon penguin mascot lying down on the ground, looking proud, in a minimalist white studio, bright studio lighting, low-angle shot"]','A grid of 4 panels (2 rows, 2 columns) separated by thin white gutters, showing the identical cute cartoon penguin mascot in every panel. Panel 1: The cute cartoon penguin mascot jumping in mid-air, looking surprised, in a neon-lit alley, cool blue twilight, three-quarter view. Panel 2: The cute cartoon penguin mascot sitting cross-legged, smiling warmly, on a mountain ridge, warm lamplight, shallow depth of field. Panel 3: The cute cartoon penguin mascot waving at the viewer, looking curious, on a wooden porch, soft morning light, wide shot. Panel 4: The cute cartoon penguin mascot lying down on the ground, looking proud, in a minimalist white studio, bright studio lighting, low-angle shot.','offline-templates','grid-prompt-1',NULL,'2026-12-02T05:05:36.376+00:00');
CREATE TABLE "grids" (
   "id" INTEGER PRIMARY KEY,
   "prompt_id" INTEGER REFERENCES "grid_prompts"("id"),
   "seed" INTEGER,
   "path" TEXT,
   "teacher" TEXT,
   "width" INTEGER,
   "height" INTEGER,
   "seconds" REAL,
   "created_at" TEXT
);
INSERT INTO "grids" VALUES(1,1,2791857979,'{HOME}/wheel/grids/1-1.png','old teacher',64,32,0.5,'2026-12-02T05:05:36.414+00:00');
CREATE TABLE "jobs" (
   "id" INTEGER PRIMARY KEY,
   "kind" TEXT,
   "status" TEXT,
   "args" TEXT,
   "pid" INTEGER,
   "log_path" TEXT,
   "done" INTEGER,
   "total" INTEGER,
   "stop_requested" INTEGER,
   "error" TEXT,
   "created_at" TEXT,
   "started_at" TEXT,
   "ended_at" TEXT
);
INSERT INTO "jobs" VALUES(1,'train','stopped','["{REPO}/.venv/bin/python", "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29500", "-m", "train.worker", "--home", "{HOME}"]',NULL,'{HOME}/logs/1.log',1,2,0,NULL,'2026-12-02T05:05:36.589+00:00','2026-12-02T05:05:36.589+00:00','2026-12-02T05:05:36.589+00:00');
CREATE TABLE "pairs" (
   "id" INTEGER PRIMARY KEY,
   "grid_id" INTEGER REFERENCES "grids"("id"),
   "panel_a" INTEGER REFERENCES "panels"("id"),
   "panel_b" INTEGER REFERENCES "panels"("id")
);
INSERT INTO "pairs" VALUES(1,1,1,2);
INSERT INTO "pairs" VALUES(2,1,2,1);
CREATE TABLE "panels" (
   "id" INTEGER PRIMARY KEY,
   "grid_id" INTEGER REFERENCES "grids"("id"),
   "idx" INTEGER,
   "row" INTEGER,
   "col" INTEGER,
   "box" TEXT,
   "path" TEXT,
   "method" TEXT,
   "problem" TEXT
);
INSERT INTO "panels" VALUES(1,1,0,0,0,'[0, 0, 32, 32]','{HOME}/wheel/panels/1-0.png','fixed',NULL);
INSERT INTO "panels" VALUES(2,1,1,0,1,'[32, 0, 64, 32]','{HOME}/wheel/panels/1-1.png','fixed',NULL);
CREATE TABLE "reviews" (
   "pair_id" INTEGER PRIMARY KEY REFERENCES "pairs"("id"),
   "decision" TEXT,
   "note" TEXT,
   "updated_at" TEXT
);
INSERT INTO "reviews" VALUES(1,'accept','same toy','2026-12-02T05:05:36.539+00:00');
CREATE TABLE "run_metrics" (
   "run_id" INTEGER REFERENCES "runs"("id"),
   "step" INTEGER,
   "loss" REAL,
   "loss_reference" REAL,
   "loss_target" REAL,
   "lr" REAL,
   "grad_norm" REAL,
   "steps_per_s" REAL,
   "samples_per_s" REAL,
   "created_at" TEXT,
   PRIMARY KEY ("run_id", "step")
);
INSERT INTO "run_metrics" VALUES(1,1,0.5,0.4,0.6,0.01,1.0,2.0,6.0,'2026-12-02T05:05:36.628+00:00');
CREATE TABLE "run_samples" (
   "run_id" INTEGER REFERENCES "runs"("id"),
   "step" INTEGER,
   "idx" INTEGER,
   "prompt" TEXT,
   "seed" INTEGER,
   "path" TEXT,
   "created_at" TEXT,
   PRIMARY KEY ("run_id", "step", "idx")
);
INSERT INTO "run_samples" VALUES(1,1,0,'the cat',0,'{HOME}/runs/1/samples/1-0.png','2026-12-02T05:05:36.651+00:00');
CREATE TABLE "runs" (
   "id" INTEGER PRIMARY KEY REFERENCES "jobs"("id"),
   "name" TEXT,
   "config" TEXT,
   "out" TEXT,
   "devices" TEXT,
   "save_requested" INTEGER,
   "sample_requested" INTEGER,
   "resumed_from" INTEGER,
   "weights" TEXT,
   "rank_digests" TEXT,
   "created_at" TEXT
);
INSERT INTO "runs" VALUES(1,'old run','{"data": "{HOME}/pairs.parquet", "base": "", "out": "{HOME}/runs/1", "resolution": 64, "rank": 8, "alpha": null, "target_modules": ["transformer_blocks.*.attn.to_q", "transformer_blocks.*.attn.to_k", "transformer_blocks.*.attn.to_v", "transformer_blocks.*.attn.to_out.0", "transformer_blocks.*.attn.add_q_proj", "transformer_blocks.*.attn.add_k_proj", "transformer_blocks.*.attn.add_v_proj", "transformer_blocks.*.attn.to_add_out", "single_transformer_blocks.*.attn.to_q", "single_transformer_blocks.*.attn.to_k", "single_transformer_blocks.*.attn.to_v", "proj_out", "norm_out.linear", "transformer_blocks.*.ff.net.0.proj", "transformer_blocks.*.ff.net.2", "single_transformer_blocks.*.proj_mlp", "single_transformer_blocks.*.proj_out"], "learning_rate": 0.01, "warmup_steps": 0, "schedule": "constant", "steps": 2, "batch_size": 3, "gradient_accumulation": 1, "gradient_checkpointing": false, "mixed_precision": "no", "guidance": 3.5, "condition_dropout": 0.0, "caption_dropout": 0.0, "half_weights": [1.0, 1.0], "condition_mask": 0.0, "max_grad_norm": 1.0, "seed": 0, "log_every": 10, "cache": true, "checkpoint_every": 20, "keep_checkpoints": 2, "sample_every": 1, "samples": [], "sample_count": 1, "sample_steps": 2, "processes": 1, "devices": "cpu", "strategy": "ddp"}','{HOME}/runs/1','cpu',0,0,NULL,NULL,NULL,NULL);
CREATE TABLE "stage_runs" (
   "id" INTEGER PRIMARY KEY,
   "stage" TEXT,
   "job_id" INTEGER,
   "added" INTEGER,
   "skipped" INTEGER,
   "failed" INTEGER,
   "stopped" INTEGER,
   "details" TEXT,
   "created_at" TEXT
);
INSERT INTO "stage_runs" VALUES(1,'captions',NULL,2,0,0,0,'{"kept": 2}','2026-12-02T05:05:36.350+00:00');
INSERT INTO "stage_runs" VALUES(2,'prompts',NULL,2,0,0,0,'{"duplicates": 0}','2026-12-02T05:05:36.400+00:00');
INSERT INTO "stage_runs" VALUES(3,'curate',NULL,1,0,0,0,'{"same": 0, "cached": 0, "input_tokens": 0, "output_tokens": 0, "seconds": 0.1}','2026-12-02T05:05:36.518+00:00');
CREATE TABLE "verdicts" (
   "pair_id" INTEGER PRIMARY KEY REFERENCES "pairs"("id"),
   "status" TEXT,
   "same" INTEGER,
   "confidence" REAL,
   "subject" TEXT,
   "description_a" TEXT,
   "description_b" TEXT,
   "reasoning" TEXT,
   "caption_target" TEXT,
   "caption_instruction" TEXT,
   "judge" TEXT,
   "prompt_version" TEXT,
   "input_tokens" INTEGER,
   "output_tokens" INTEGER,
   "cached" INTEGER,
   "error" TEXT,
   "created_at" TEXT
);
INSERT INTO "verdicts" VALUES(1,'ok',0,0.643,'unknown (no VLM: offline similarity only)','','','similarity score 0.500 < threshold 0.700 (colour histogram, thumbnail correlation, edge orientations)','the same subject, another view','show the same subject from another view','offline-similarity (stand-in, not a VLM)','curate-v1',0,0,0,NULL,NULL);
CREATE INDEX "idx_generations_created_at"
    ON "generations" ("created_at");
CREATE UNIQUE INDEX "idx_captions_text"
    ON "captions" ("text");
CREATE UNIQUE INDEX "idx_grid_prompts_caption_id"
    ON "grid_prompts" ("caption_id");
CREATE UNIQUE INDEX "idx_grids_prompt_id_seed"
    ON "grids" ("prompt_id", "seed");
CREATE UNIQUE INDEX "idx_panels_grid_id_idx"
    ON "panels" ("grid_id", "idx");
CREATE UNIQUE INDEX "idx_pairs_panel_a_panel_b"
    ON "pairs" ("panel_a", "panel_b");
CREATE INDEX "idx_stage_runs_stage"
    ON "stage_runs" ("stage");
CREATE INDEX "idx_jobs_status"
    ON "jobs" ("status");
CREATE UNIQUE INDEX "idx_run_metrics_run_id_step"
    ON "run_metrics" ("run_id", "step");
CREATE UNIQUE INDEX "idx_evals_name"
    ON "evals" ("name");
CREATE UNIQUE INDEX "idx_eval_samples_eval_id_item_id_k"
    ON "eval_samples" ("eval_id", "item_id", "k");
CREATE UNIQUE INDEX "idx_eval_judgements_eval_id_item_id_k_run_judge_templates_hash"
    ON "eval_judgements" ("eval_id", "item_id", "k", "run", "judge", "templates_hash");
CREATE UNIQUE INDEX "idx_eval_metrics_eval_id_item_id_k_metric"
    ON "eval_metrics" ("eval_id", "item_id", "k", "metric");
COMMIT;
