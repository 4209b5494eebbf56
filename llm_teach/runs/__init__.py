"""The one run-directory mechanism: every command's OUT resumes the same way.

- `directory.py`: `RunDirectory`, OUT claimed by one run: its identity (the manifest sections
  that say which run it is), the refusal of another run's OUT naming the changed key, and
  `manifest.json` with its `status` ("running" / "complete").
- `worklog.py`: `work_once`, keyed once-only work: fixed groups of items, each finished group
  appended to a crash-safe log, skipped by a re-run.
- `stage_run.py`: `StageRun`, a stage's OUT built from the two (seeded work units, counts,
  token usage); its docstring is the how-to for writing a stage.
- `usage.py`: token usage per role and the metered backend wrapper that counts it.
- `manifest.py`: `write_manifest`, the file itself: command, versions, host, the time and the
  caller's sections, secrets redacted, written atomically.
- `hashing.py`: content hashes (of JSON, files, texts) and derived seeds that name units,
  inputs and steps.

Evaluation (`items.jsonl`, one record per problem) uses `RunDirectory` and `work_once` too.
Trainers use `RunDirectory` (identity: method, config, the data file's hash) to tell a finished
run from another one and to write their manifest; checkpoints and `--resume` stay theirs
(`trainers/lifecycle.py`), since the HF Trainer owns that state.
Nothing here imports a stage, a trainer or a backend: stages, evaluation and trainers build on
`runs`, not the other way round.
"""
