"""Issue 10, acceptance: every bad input of eval, generate, train and run gets exactly one
`error:` line naming the file or key, exit code 2, no traceback, and leaves nothing behind:
the whole tmp directory (so also `--out`, and anything a path traversal would reach) is
byte-for-byte, mtime-for-mtime the same afterwards, and a fresh `--out` does not exist.

Each case is a row: (id, setup, command, needle). `setup` prepares files in the row's tmp
directory (and may copy in a real finished run, made once per module by `Runs`); the
command runs through the real CLI in a subprocess. Validation must fail before any model
loads, so most rows cost one CLI start-up. Rows that fail on today's code are strict xfails
whose reason says what happens today; a fix flips its row.

Also here: Ctrl-C (a real SIGINT to the CLI: exit 130, one line, then the same command
resumes to the records of an uninterrupted run), a failed start must not block its corrected
re-run, secrets in URLs never reach disk, and outputs follow the user's umask.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import CLI, ROOT, check_one_line_error, run_cli
from sigkill import units_done

SECRET = "S3CRET"  # never to be printed or written anywhere
LATIN1 = "caf\xe9".encode("latin-1")  # bytes that are not UTF-8


# -- commands ---------------------------------------------------------------------------------


@dataclass
class Ctx:
    """One row's world: its tmp directory, its --out, and the small inputs commands read."""

    tmp: Path
    runs: "Runs"
    out: Path = None  # type: ignore[assignment]

    def __post_init__(self):
        self.out = self.out or self.tmp / "out"
        self.problems = write_problems(self.tmp / "data" / "p.jsonl", ["What is 1+2?", "What is 2+2?"], [3, 4])
        self.records = write_records(self.tmp / "data" / "r.jsonl", 4)

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def pipeline(self, step: str = "", name: str = "pipe.yaml", **eval_options) -> Path:
        """A one-step pipeline evaluating tiny-random on the row's problems (or `step`, raw YAML)."""
        options = {"data": str(self.problems), "limit": 2, "config": {"max_new_tokens": 4}, **eval_options}
        body = step or "  - name: ev\n    eval: tiny-random\n" + "".join(
            f"    {k}: {json.dumps(v)}\n" for k, v in options.items())
        return self.file(name, "steps:\n" + body)


def write_problems(path: Path, questions: list[str], answers: list[int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": q, "answer": f"It is {a}. #### {a}"}) + "\n"
                            for q, a in zip(questions, answers)))
    return path


def write_records(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": f"Say {i}.", "completion": str(i)}) + "\n" for i in range(n)))
    return path


def eval_cmd(c: Ctx, *extra, data=None) -> list:
    return ["eval", "--model", "tiny-random", "--benchmark", "gsm8k", "--data", data or c.problems,
            "--limit", "2", "--max-new-tokens", "4", "--out", c.out, *extra]


def gen_cmd(c: Ctx, *extra, data=None) -> list:
    return ["generate", "ssb", "--teacher", "tiny-random", "--data", data or c.problems, "--limit", "2",
            "--set", "rollouts=2", "--set", "max_new_tokens=4", "--set", "explain_max_new_tokens=4",
            "--out", c.out, *extra]


def train_cmd(c: Ctx, *extra, data=None) -> list:
    return ["train", "--method", "sft", "--model", "tiny-random", "--data", data or c.records,
            "--max-steps", "2", "--set", "save_steps=1", "--out", c.out, *extra]


def run_cmd(c: Ctx, pipeline: Path | None = None) -> list:
    return ["run", pipeline or c.pipeline(), "--out", c.out]


COMMANDS = {"eval": eval_cmd, "generate": gen_cmd, "train": train_cmd, "run": run_cmd}


# -- real runs to mix into (made once per module, copied into each row that needs one) ------------


class Runs:
    """Finished output directories of each command, made on first use from tiny inputs."""

    def __init__(self, root: Path):
        self.root = root
        self.made: dict[str, Path] = {}

    def get(self, kind: str) -> Path:
        if kind not in self.made:
            c = Ctx(self.root / kind, self)
            c.out = self.root / kind / "out"
            if kind == "train-killed":
                result = run_cli(*train_cmd(c))
                # What a run killed after its first checkpoint leaves (SIGKILL timing on a
                # 2-step run is a race): checkpoint-1, a "running" manifest, no final model.
                shutil.rmtree(c.out / "checkpoints" / "checkpoint-2")
                shutil.rmtree(c.out / "model")
                manifest = json.loads((c.out / "manifest.json").read_text())
                (c.out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
            else:
                result = run_cli(*COMMANDS[kind](c))
            assert result.returncode == 0, result.stderr[-3000:]
            self.made[kind] = c.out
        return self.made[kind]

    def copy_into(self, kind: str, c: Ctx) -> None:
        shutil.copytree(self.get(kind), c.out, copy_function=shutil.copy2)  # keeps mtimes


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"))


# -- the table ----------------------------------------------------------------------------------


@dataclass
class Case:
    command: Callable[[Ctx], list]
    needle: str  # must be in the one error line
    setup: Callable[[Ctx], None] = field(default=lambda c: None)


def row(id: str, command, needle: str, setup=None, xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=f"issue 10: {xfail}")] if xfail else []
    return pytest.param(Case(command, needle, setup or (lambda c: None)), id=id, marks=marks)


def other_same_name_problems(c: Ctx) -> Path:
    """Another problems file with the same name as the one the copied run read."""
    return write_problems(c.tmp / "other" / "p.jsonl", ["What is 5+5?", "What is 6+1?"], [10, 7])


def out_under_file(c: Ctx) -> None:
    c.file("afile", "I am a file\n")
    c.out = c.tmp / "afile" / "out"


def out_is_file(c: Ctx) -> None:
    c.file("afile", "I am a file\n")
    c.out = c.tmp / "afile"


def corrupt(name: str):
    def setup(c: Ctx) -> None:
        c.out.mkdir()
        (c.out / name).write_text('{"status": "runn')
    return setup


def copy_run(kind: str):
    return lambda c: c.runs.copy_into(kind, c)


def suite(c: Ctx, **entry) -> Path:
    entry = {"benchmark": "gsm8k", "data": str(c.problems), "limit": 2, "max_new_tokens": 4, **entry}
    return c.file("suite.yaml", "benchmarks:\n  - " + "\n    ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items()) + "\n")


NOT_UTF8_PROBLEMS = b'{"question": "' + LATIN1 + b'?", "answer": "#### 1"}\n'
NOT_UTF8_YAML = b"max_new_tokens: 4  # " + LATIN1 + b"\n"
OPENAI_URL = f"http://127.0.0.1:9/v1?api_key={SECRET}"  # port 9: nothing listens there

ROWS = [
    # -- 2. silent mixing of runs -------------------------------------------------------------
    row("eval-same-name-other-data", lambda c: eval_cmd(c, data=other_same_name_problems(c)), "p.jsonl",
        copy_run("eval")),
    row("generate-same-name-other-data", lambda c: gen_cmd(c, data=other_same_name_problems(c)), "p.jsonl",
        copy_run("generate")),
    row("train-resume-other-data", lambda c: train_cmd(c, "--resume", data=write_records(c.tmp / "o" / "r.jsonl", 6)),
        "data", copy_run("train-killed")),
    row("train-resume-other-settings", lambda c: train_cmd(c, "--resume", "--learning-rate", "5e-5"),
        "learning_rate", copy_run("train-killed")),
    row("run-into-eval-dir", run_cmd, "eval", copy_run("eval")),
    row("eval-into-pipeline-dir", eval_cmd, "pipeline", copy_run("run")),
    row("train-into-ssb-dir", train_cmd, "ssb", copy_run("generate")),
    row("train-into-eval-dir", train_cmd, "eval", copy_run("eval")),
    row("eval-into-train-dir", eval_cmd, "sft", copy_run("train-killed")),
    row("generate-into-eval-dir", gen_cmd, "eval", copy_run("eval")),
    # -- 3. a failed start must write nothing (see also test_failed_start_does_not_block_its_fix) --
    row("generate-chunk-size-0", lambda c: gen_cmd(c, "--set", "chunk_size=0"), "chunk_size"),
    # -- 4. tracebacks on ordinary bad input ----------------------------------------------------
    row("eval-data-not-utf8", lambda c: eval_cmd(c, data=c.file("latin1.jsonl", NOT_UTF8_PROBLEMS)), "latin1.jsonl"),
    row("generate-data-not-utf8", lambda c: gen_cmd(c, data=c.file("latin1.jsonl", NOT_UTF8_PROBLEMS)),
        "latin1.jsonl"),
    row("train-data-not-utf8", lambda c: train_cmd(c, data=c.file("latin1.jsonl", b'{"prompt": "' + LATIN1 +
                                                                   b'", "completion": "1"}\n')),
        "latin1.jsonl"),
    row("run-data-not-utf8", lambda c: run_cmd(c, c.pipeline(data=str(c.file("latin1.jsonl", NOT_UTF8_PROBLEMS)))),
        "latin1.jsonl"),
    row("generate-config-not-utf8", lambda c: gen_cmd(c, "--config", c.file("latin1.yaml", NOT_UTF8_YAML)),
        "latin1.yaml"),
    row("train-config-not-utf8", lambda c: train_cmd(c, "--config", c.file("latin1.yaml", NOT_UTF8_YAML)),
        "latin1.yaml"),
    row("eval-suite-not-utf8", lambda c: ["eval", "--model", "tiny-random", "--suite",
                                          c.file("latin1.yaml", b"benchmarks:\n  - benchmark: gsm8k  # " + LATIN1 + b"\n"),
                                          "--out", c.out],
        "latin1.yaml"),
    row("run-pipeline-not-utf8", lambda c: run_cmd(c, c.file("latin1.yaml", b"steps: []  # " + LATIN1 + b"\n")),
        "latin1.yaml"),
    *[row(f"{cmd}-out-under-file", lambda c, cmd=cmd: COMMANDS[cmd](c), "afile", out_under_file) for cmd in COMMANDS],
    *[row(f"{cmd}-out-is-file", lambda c, cmd=cmd: COMMANDS[cmd](c), "afile", out_is_file) for cmd in COMMANDS],
    row("eval-max-new-tokens-negative", lambda c: eval_cmd(c, "--max-new-tokens", "-5"), "--max-new-tokens"),
    row("generate-max-new-tokens-negative", lambda c: gen_cmd(c, "--set", "max_new_tokens=-5"), "max_new_tokens"),
    row("train-learning-rate-negative", lambda c: train_cmd(c, "--learning-rate", "-1"), "--learning-rate"),
    row("run-limit-two", lambda c: run_cmd(c, c.pipeline(limit="two")), "limit"),
    row("run-max-new-tokens-negative", lambda c: run_cmd(c, c.pipeline(config={"max_new_tokens": -5})),
        "max_new_tokens"),
    *[row(f"{cmd}-data-fake-parquet", lambda c, cmd=cmd: COMMANDS[cmd](c, data=c.file("fake.parquet", "not parquet\n"))
          if cmd != "run" else run_cmd(c, c.pipeline(data=str(c.file("fake.parquet", "not parquet\n")))),
          "fake.parquet") for cmd in COMMANDS],
    row("eval-corrupt-manifest", eval_cmd, "manifest.json", corrupt("manifest.json")),
    row("generate-corrupt-manifest", gen_cmd, "manifest.json", corrupt("manifest.json")),
    row("train-corrupt-manifest", train_cmd, "manifest.json", corrupt("manifest.json")),
    row("run-corrupt-pipeline-json", run_cmd, "pipeline.json", corrupt("pipeline.json")),
    # -- 5. accepted nonsense -------------------------------------------------------------------
    row("eval-temperature-negative", lambda c: eval_cmd(c, "--temperature", "-1", "--samples", "3"), "--temperature"),
    row("eval-top-p-5", lambda c: eval_cmd(c, "--top-p", "5"), "--top-p"),
    row("generate-rollout-temperature-negative", lambda c: gen_cmd(c, "--set", "rollout_temperature=-0.5"),
        "rollout_temperature"),
    row("generate-top-p-5", lambda c: gen_cmd(c, "--set", "top_p=5"), "top_p"),
    row("train-limit-negative", lambda c: train_cmd(c, "--limit", "-1"), "--limit"),
    row("run-temperature-negative", lambda c: run_cmd(c, c.pipeline(config={"max_new_tokens": 4, "samples": 3,
                                                                             "temperature": -1})), "temperature"),
    # -- 6. secrets: a key in the query string is refused, pointing to --api-key-env ------------
    row("eval-api-key-in-url", lambda c: eval_cmd(c, "--backend", "openai", "--base-url", OPENAI_URL,
                                                  "--max-retries", "0"), "api-key-env"),
    row("generate-api-key-in-url", lambda c: gen_cmd(c, "--teacher-backend", "openai", "--teacher-base-url", OPENAI_URL,
                                                     "--teacher-max-retries", "0"), "api-key-env"),
    row("train-api-key-in-url", lambda c: ["train", "--method", "kdrl", "--model", "tiny-random", "--teacher", "m",
                                           "--teacher-backend", "openai", "--teacher-base-url", OPENAI_URL,
                                           "--data", c.problems, "--max-steps", "1", "--out", c.out], "api_key_env"),
    row("run-api-key-in-url", lambda c: run_cmd(c, c.pipeline(backend={"backend": "openai", "base_url": OPENAI_URL,
                                                                       "max_retries": 0})), "api_key_env"),
    # -- 7. path traversal: names that become paths stay inside --out --------------------------
    row("eval-suite-name-dotdot", lambda c: ["eval", "--model", "tiny-random", "--suite", suite(c, name="../../x"),
                                             "--out", c.out], "../../x",
        lambda c: setattr(c, "out", c.tmp / "a" / "b" / "out")),
    row("eval-suite-name-absolute", lambda c: ["eval", "--model", "tiny-random",
                                               "--suite", suite(c, name=str(c.tmp / "abs")), "--out", c.out], "abs"),
    row("eval-suite-benchmark-dotdot", lambda c: ["eval", "--model", "tiny-random",
                                                  "--suite", suite(c, benchmark="rg:../../x", data=None),
                                                  "--out", c.out], "../../x"),
    row("run-step-name-dotdot", lambda c: run_cmd(c, c.pipeline(step="  - name: ../x\n    eval: tiny-random\n")),
        "name"),
]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its kind, mode, mtime and (files) bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        found[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns, content)
    return found


@pytest.mark.parametrize("case", ROWS)
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, tmp_path, runs):
    c = Ctx(tmp_path, runs)
    case.setup(c)
    args = case.command(c)
    fresh = not c.out.exists()
    before = snapshot(tmp_path)
    result = run_cli(*args, timeout=300)
    assert SECRET not in result.stdout + result.stderr
    check_one_line_error(result, case.needle)
    after = snapshot(tmp_path)
    assert after == before, sorted(set(after.items()) ^ set(before.items()), key=str)[:5]
    assert not fresh or not c.out.exists()


# -- 3. a failed start does not block its corrected re-run ----------------------------------------


@pytest.mark.parametrize("command, bad", [("eval", ["--max-new-tokens", "-5"]),
                                          ("generate", ["--set", "chunk_size=0"])])
def test_failed_start_does_not_block_its_fix(command, bad, tmp_path, tiny_model_dir):
    c = Ctx(tmp_path, None)
    run_cli(*COMMANDS[command](c, *bad))  # fails (how it fails is the table's business)
    fixed = run_cli(*COMMANDS[command](c))
    assert fixed.returncode == 0, fixed.stderr[-2000:]


# -- 6. credentials in a URL are used but never printed or written --------------------------------


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_url_password_is_never_stored(command, tmp_path, tiny_model_dir):
    from fault_server import FaultServer

    out = tmp_path / "out"
    with FaultServer(fault_rate=0.0) as server:
        url = server.base_url.replace("http://", f"http://user:{SECRET}@")
        if command == "eval":
            args = ["eval", "--backend", "openai", "--base-url", url, "--model", "m", "--benchmark", "rg:chain_sum"]
        else:  # the served model is the student: its rollouts are all right, so the teacher is not needed
            args = ["generate", "ssb", "--teacher", "tiny-random", "--student", "m", "--student-backend", "openai",
                    "--student-base-url", url, "--data", "rg:chain_sum", "--set", "rollouts=2"]
        result = run_cli(*args, "--limit", "2", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    written = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert SECRET not in result.stdout + result.stderr
    assert [name for name, data in written.items() if SECRET.encode() in data] == []


# -- 9. outputs follow the user's umask ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["eval", "generate", "train", "run"])
def test_outputs_follow_the_umask(kind, runs):
    umask = os.umask(0)
    os.umask(umask)
    out = runs.get(kind)  # made by a subprocess that inherited this umask
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes and {name: oct(m) for name, m in modes.items() if m != 0o666 & ~umask} == {}


# -- 1. Ctrl-C: exit 130, one line, and the same command resumes to the uninterrupted records ---------

INTERRUPTED = "interrupted; re-run the same command to resume"


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _checkpoints(out: Path) -> int:
    return len(list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")))


SIGINT_CASES = {
    # command args (without --out), "has made progress" predicate, final files compared to the reference
    "eval": (["eval", "--model", "tiny-random", "--data", "rg:chain_sum", "--limit", "24", "--max-new-tokens", "32"],
             lambda out: _lines(out / "items.jsonl.part") >= 8, ["items.jsonl"]),
    "generate": (["generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "8",
                  "--set", "chunk_size=1", "--set", "max_new_tokens=16", "--set", "explain_max_new_tokens=8"],
                 lambda out: units_done(out, "ssb") >= 2, ["rollouts.jsonl", "records.jsonl", "work/ssb.jsonl"]),
    # a plain re-run resumes an interrupted run of the same config and data from its last checkpoint
    "train": (["train", "--method", "sft", "--model", "tiny-random", "--max-steps", "12", "--set", "save_steps=2",
               "--set", "per_device_train_batch_size=2"],
              lambda out: _checkpoints(out) >= 1, []),
}


@pytest.mark.parametrize("kind", list(SIGINT_CASES))
def test_sigint_exits_130_and_the_same_command_resumes(kind, tmp_path, tiny_model_dir):
    args, progressed, finals = SIGINT_CASES[kind]
    if kind == "train":
        args = [*args, "--data", write_records(tmp_path / "r.jsonl", 24)]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert run_cli(*args, "--out", reference).returncode == 0
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([*CLI, *map(str, args), "--out", str(resumed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=err)
        deadline = time.time() + 300
        while not progressed(resumed) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be interrupted; make it longer"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == INTERRUPTED, stderr[-2000:]
    assert stderr.count(INTERRUPTED) == 1
    again = run_cli(*args, "--out", resumed)
    assert again.returncode == 0, again.stderr[-2000:]
    for name in finals:
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    if kind == "train":
        ref, res = (json.loads((d / "manifest.json").read_text()) for d in (reference, resumed))
        assert res["status"] == "complete" and res["global_step"] == ref["global_step"] == 12
        steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
        assert steps == [json.loads(line)["step"] for line in (reference / "metrics.jsonl").read_text().splitlines()]
        assert (resumed / "model" / "model.safetensors").is_file()
    assert not list(resumed.rglob("*.part"))
