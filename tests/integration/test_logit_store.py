"""Top-k logit store: a real SIGKILL of a writer mid-append, then resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from llm_teach.data.logit_store import TopKLogitStore
from unit.test_logit_store import _check, _write

_CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from unit.test_logit_store import _record, K
    from llm_teach.data.logit_store import TopKLogitWriter
    w = TopKLogitWriter({root!r}, k=K)
    i = len(w)
    while True:
        w.append(*_record(i))
        i += 1
    """
)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_during_appends_then_resume(tmp_path):
    root = tmp_path / "store"
    tests = Path(__file__).parents[1]
    code = _CHILD.format(repo=str(tests.parent), tests=str(tests), root=str(root))
    for _round in range(2):
        proc = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.time() + 30
        index = root / "index.jsonl"
        # let it write at least 50 more records, then kill it wherever it is
        while time.time() < deadline and _lines(index) < 50 * (_round + 1):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    n = len(TopKLogitStore(root))
    assert n >= 100
    _write(root, range(n, n + 3))
    store = TopKLogitStore(root)
    assert list(store.keys()) == [f"p{i}/0" for i in range(n + 3)]
    for i in range(n + 3):
        _check(store, i)
