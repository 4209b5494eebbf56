"""Issue 10, sections 2, 3, 6, 7 below the CLI: a run directory's kind and identity, the one
credentials rule, and names that become paths. (The CLI-level rows are in test_bad_input.py.)

- `RunDirectory` refuses another kind of run and, over existing work, a run with other
  settings or other data (by content, not by path), naming the changed keys; it lets a start
  that produced nothing be started over; it never touches OUT when it refuses.
- Credentials: which `Authorization` a real HTTP server receives for each combination of URL
  userinfo, `--api-key-env` and `OPENAI_API_KEY`; query-string keys refused; masking.
- `check_name`: the one check of a name that becomes a directory.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from fault_server import FaultServer

from llm_teach.credentials import check_auth, check_url, mask_text, mask_url
from llm_teach.data.problems import Problem, ProblemList, load_problems
from llm_teach.errors import UserError
from llm_teach.runs.directory import RunDirectory, check_name
from llm_teach.runs.hashing import data_fingerprint

SECRET = "S3CRET"


def problems(*answers: str, source: str = "p.jsonl") -> ProblemList:
    return ProblemList([Problem(id=f"p-{i}", question=f"q{i}", answer=a, source="file:p.jsonl")
                        for i, a in enumerate(answers, start=1)], source)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def start(out: Path, kind: str = "eval", config=None, data=None, work: bool = True) -> RunDirectory:
    """A run that wrote its manifest and (with `work`) one record."""
    directory = RunDirectory(out, kind, {"config": config or {"lr": 1}}, data=data or data_fingerprint(problems("1")))
    assert directory.claim() is None
    directory.write_manifest(status="running")
    if work:
        (out / "items.jsonl.part").write_text('{"id": "p-1"}\n')
    return directory


# -- kind and identity ---------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["train:sft", "generate:ssb", "pipeline"])
def test_another_kind_is_refused_naming_both_and_out_is_untouched(tmp_path, other):
    out = tmp_path / "out"
    start(out, kind="eval")
    before = tree(out)
    with pytest.raises(UserError, match=f"holds an eval run, not a {other} run"):
        RunDirectory(out, other, {}).claim()
    assert tree(out) == before


@pytest.mark.parametrize("marker, kind", [("pipeline.json", "pipeline"), ("suite.json", "eval-suite")])
def test_a_pipeline_or_suite_out_is_recognised_without_a_manifest(tmp_path, marker, kind):
    (tmp_path / marker).write_text("{}")
    with pytest.raises(UserError, match=f"holds an? {kind} run, not an eval run"):
        RunDirectory(tmp_path, "eval", {"config": {}}).claim()
    assert RunDirectory(tmp_path, kind, {}).check_kind() is None  # its own kind passes


def test_old_manifests_without_a_kind_are_recognised(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"stage": "ssb", "config": {}}))
    with pytest.raises(UserError, match="holds a generate:ssb run, not a train:sft run"):
        RunDirectory(tmp_path, "train:sft", {}).claim()


def test_other_settings_over_work_are_refused_naming_every_changed_key(tmp_path):
    out = tmp_path / "out"
    start(out, config={"lr": 1, "steps": 2, "seed": 0})
    before = tree(out)
    with pytest.raises(UserError) as caught:
        RunDirectory(out, "eval", {"config": {"lr": 5, "steps": 2, "seed": 0}},
                     data=data_fingerprint(problems("1"))).claim()
    assert "config.lr: 1 -> 5" in str(caught.value) and "steps" not in str(caught.value)
    assert tree(out) == before


def test_other_data_of_the_same_name_is_refused_naming_both_sources(tmp_path):
    out = tmp_path / "out"
    start(out, data=data_fingerprint(problems("1", source="a/p.jsonl")))
    with pytest.raises(UserError) as caught:
        RunDirectory(out, "eval", {"config": {"lr": 1}}, data=data_fingerprint(problems("2", source="b/p.jsonl"))).claim()
    message = str(caught.value)
    assert "other data" in message and "a/p.jsonl" in message and "b/p.jsonl" in message


def test_the_same_data_elsewhere_is_the_same_run(tmp_path):
    out = tmp_path / "out"
    start(out, data=data_fingerprint(problems("1", source="a/p.jsonl")))
    previous = RunDirectory(out, "eval", {"config": {"lr": 1}},
                            data=data_fingerprint(problems("1", source="copy/p.jsonl"))).claim()
    assert previous is not None and previous["status"] == "running"  # resumed, not refused


def test_a_start_that_produced_nothing_may_start_over_with_other_settings(tmp_path):
    out = tmp_path / "out"
    start(out, config={"lr": 1}, work=False)
    (out / "items.jsonl.part").write_text("")  # an empty log is no work
    assert RunDirectory(out, "eval", {"config": {"lr": 5}}, data=data_fingerprint(problems("1"))).claim() is None


def test_the_content_hash_covers_every_field_of_every_problem(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    first = data_fingerprint(load_problems(str(path)))
    assert first.source == str(path) and first.count == 1
    path.write_text('{"question": "1+1?", "answer": "#### 3"}\n')  # same name, same id, other gold answer
    assert data_fingerprint(load_problems(str(path))).hash != first.hash


@pytest.mark.parametrize("answers, same_run", [(("1", "2", "3"), True),  # a larger --limit: the run grown
                                               (("1", "2"), True),
                                               (("1", "9", "3"), False),  # more, but not beginning with the old
                                               (("1",), False)])  # fewer: not the recorded run
def test_more_problems_that_begin_with_the_old_ones_are_the_same_run_grown(tmp_path, answers, same_run):
    out = tmp_path / "out"
    start(out, data=data_fingerprint(problems("1", "2")))
    directory = RunDirectory(out, "eval", {"config": {"lr": 1}}, data=data_fingerprint(problems(*answers)))
    if same_run:
        assert directory.claim()["status"] == "running"
    else:
        with pytest.raises(UserError, match="other data: data 2 from p.jsonl"):
            directory.claim()


def test_the_manifest_names_its_kind_and_data_first(tmp_path):
    start(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["kind"] == "eval" and manifest["data"]["hash"].startswith("sha256:")


# -- credentials ---------------------------------------------------------------------------------


def _served_authorization(url: str, monkeypatch, api_key_env: str | None = None, **env: str) -> set[str]:
    """The Authorization headers a real server received for one request through the transport."""
    from llm_teach.backends.base import SamplingConfig
    from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with FaultServer(fault_rate=0.0) as server:
        backend = OpenAIBackend("m", OpenAIConfig(base_url=url.format(server=server.base_url.removeprefix("http://")),
                                                  api_key_env=api_key_env, max_retries=0))
        backend.generate(["problem: 1 + 2 = ?"], 1, SamplingConfig(max_new_tokens=8))
        assert SECRET not in repr(backend) + json.dumps(backend.stats)
    return server.authorization


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_key_from_api_key_env_is_sent_as_bearer(monkeypatch):
    assert _served_authorization("http://{server}", monkeypatch, "MY_KEY", MY_KEY=SECRET) == {f"Bearer {SECRET}"}


def test_url_userinfo_is_basic_auth_and_then_openai_api_key_is_not_sent(monkeypatch):
    got = _served_authorization(f"http://us%40er:{SECRET}@{{server}}", monkeypatch, OPENAI_API_KEY="ambient")
    assert got == {_basic("us@er", SECRET)}


def test_url_userinfo_together_with_api_key_env_is_refused_before_any_request(monkeypatch):
    from llm_teach.backends import BackendOptions

    monkeypatch.setenv("MY_KEY", "k")
    with pytest.raises(UserError, match="drop one") as caught:
        _served_authorization(f"http://u:{SECRET}@{{server}}", monkeypatch, "MY_KEY")
    assert SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="api_key_env"):  # the pipeline's and Python callers' path
        BackendOptions(backend="openai", base_url=f"http://u:{SECRET}@h/v1", api_key_env="MY_KEY")


@pytest.mark.parametrize("query", ["api_key", "key", "token", "access_token", "API-KEY", "password"])
def test_a_key_in_the_query_string_is_refused_without_showing_it(query):
    with pytest.raises(ValueError) as caught:
        check_url(f"http://h:1/v1?x=1&{query}={SECRET}", "--api-key-env")
    assert "--api-key-env" in str(caught.value) and SECRET not in str(caught.value)


def test_a_plain_url_passes_every_check():
    check_url("http://127.0.0.1:8000/v1")
    check_auth("http://u:p@127.0.0.1:8000/v1", None)


@pytest.mark.parametrize("text, shown", [
    (f"llm-teach eval --base-url http://u:{SECRET}@h:8/v1 --out o", "llm-teach eval --base-url http://u:***@h:8/v1 --out o"),
    (f"--base-url=https://h/v1?api_key={SECRET}&x=1", "--base-url=https://h/v1?api_key=***&x=1"),
    (f"server http://h/v1?token={SECRET} failed", "server http://h/v1?token=*** failed"),
    ("no url here", "no url here"),
])
def test_masking_of_command_lines_and_messages(text, shown):
    assert mask_text(text) == shown


def test_the_manifest_masks_urls_in_the_command_and_in_every_value(tmp_path):
    from llm_teach.runs.manifest import write_manifest

    url = f"http://u:{SECRET}@h/v1"
    write_manifest(tmp_path, command=f"llm-teach eval --base-url {url}", models={"teacher": {"base_url": url}},
                   backend_stats={"server": mask_url(url)}, api_key=SECRET)
    text = (tmp_path / "manifest.json").read_text()
    assert SECRET not in text and "http://u:***@h/v1" in text


# -- names that become paths ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", ".hidden", "", "a\\b", "x\x00", 7])
def test_check_name_refuses_anything_but_a_word(name):
    with pytest.raises(ValueError, match="must be a word"):
        check_name(name, "'name'")


@pytest.mark.parametrize("name", ["gsm8k", "rg-chain_sum", "Step2"])
def test_check_name_accepts_words(name):
    assert check_name(name, "'name'") == name


# -- a failed start does not block its fix (trainers and pipelines) ------------------------------


def test_a_training_that_failed_before_its_first_checkpoint_may_start_over_with_another_config(tmp_path,
                                                                                              tiny_model_dir):
    from transformers import TrainerCallback

    from llm_teach.trainers import train

    class Fail(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            raise UserError("failed at the start")

    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.", "completion": str(i)}) + "\n" for i in range(4)))
    values = {"model": "tiny-random", "data": str(data), "max_steps": 1, "learning_rate": 1e-3}
    out = tmp_path / "out"
    with pytest.raises(UserError, match="failed at the start"):
        train("sft", values, out, callbacks=[Fail()])
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    model = train("sft", {**values, "learning_rate": 1e-4}, out)  # another config, no work to protect
    manifest = json.loads((out / "manifest.json").read_text())
    assert model.is_dir() and manifest["status"] == "complete" and manifest["config"]["learning_rate"] == 1e-4
    with pytest.raises(UserError, match=r"other config: config.learning_rate: 0.0001 -> 0.001"):
        train("sft", values, out)  # now there is a model to protect


def test_a_pipeline_with_a_missing_data_file_fails_before_writing(tmp_path):
    from conftest import check_one_line_error, run_cli

    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("steps:\n  - name: ev\n    eval: tiny-random\n    data: nowhere/p.jsonl\n")
    check_one_line_error(run_cli("run", pipe, "--out", tmp_path / "out"), "nowhere/p.jsonl")
    assert not (tmp_path / "out").exists()
