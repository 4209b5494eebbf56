"""The one run-directory mechanism: every command's OUT resumes the same way.

- `directory.py`: `RunDirectory`, OUT claimed by one run: its kind ("eval", "generate:ssb",
  "train:sft", "pipeline"; another kind's OUT is refused untouched), its identity (the manifest
  sections that say which run it is, plus the content hash of the data it reads), the refusal
  of another run's work naming the changed keys (a start that left no work starts over), and
  `manifest.json` with its `status` ("running" / "complete"); `check_name`, the one check of a
  name that becomes a directory.
- `worklog.py`: `work_once`, keyed once-only work: fixed groups of items, each finished group
  appended to a crash-safe log, skipped by a re-run.
- `stage_run.py`: `StageRun`, a stage's OUT built from the two (seeded work units, counts,
  token usage); its docstring is the how-to for writing a stage.
- `usage.py`: token usage per role and the metered backend wrapper that counts it.
- `manifest.py`: `write_manifest`, the file itself: command, versions, host, the time and the
  caller's sections, secrets redacted (keys named like secrets; credentials inside any URL, the
  command line included: `llm_teach.credentials`), written atomically.
- `hashing.py`: content hashes (of JSON, files, texts, a run's problems: `data_fingerprint`)
  and derived seeds that name units, inputs and steps.

Evaluation (`items.jsonl`, one record per problem) uses `RunDirectory` and `work_once` too.
Trainers use `RunDirectory` (identity: method, config, the data's content hash) to tell a finished
run from another one and to write their manifest; checkpoints and `--resume` stay theirs
(`trainers/lifecycle.py`), since the HF Trainer owns that state.
Nothing here imports a stage, a trainer or a backend: stages, evaluation and trainers build on
`runs`, not the other way round.
"""
