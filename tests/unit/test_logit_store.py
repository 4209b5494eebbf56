"""Top-k logit store: round trips, resume, crash recovery, memmap (a real SIGKILL: tests/integration)."""

import json
import os

import numpy as np
import pytest

from llm_teach.data.logit_store import TopKLogitStore, TopKLogitWriter

K = 4


def _record(i: int, k: int = K):
    """Deterministic arrays for record i (length varies, including 0)."""
    rng = np.random.default_rng(i)
    t = (i * 7) % 13
    return (
        f"p{i}/0",
        rng.integers(0, 50_000, t).tolist(),
        rng.integers(0, 50_000, (t, k)).astype(np.int32),
        -rng.random((t, k)).astype(np.float32) * 10,
        -rng.random(t).astype(np.float32) * 10,
    )


def _check(store: TopKLogitStore, i: int, atol: float = 1e-2):
    key, tokens, ids, lps, tok_lps = _record(i)
    rec = store.get(key)
    assert rec.token_ids.tolist() == tokens
    np.testing.assert_array_equal(rec.topk_ids, ids)
    np.testing.assert_allclose(rec.topk_logprobs.astype(np.float32), lps, atol=atol)  # float16
    np.testing.assert_array_equal(rec.token_logprobs, tok_lps)


def _write(root, ids, **kw):
    with TopKLogitWriter(root, k=K, **kw) as w:
        return [w.append(*_record(i)) for i in ids]


def test_round_trip_many_lengths(tmp_path):
    refs = _write(tmp_path, range(40), model="teacher-x", vocab_size=50_000)
    store = TopKLogitStore(tmp_path)
    assert len(store) == 40 and list(store.keys()) == [f"p{i}/0" for i in range(40)]
    assert "p3/0" in store and "nope" not in store
    for i in range(40):
        _check(store, i)
        by_ref = store.get(refs[i])
        np.testing.assert_array_equal(by_ref.topk_ids, store.get(f"p{i}/0").topk_ids)
    assert refs[0] == {"store": str(tmp_path), "key": "p0/0", "offset": 0, "length": 0}
    assert refs[2]["offset"] == refs[1]["offset"] + refs[1]["length"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["k"] == K and meta["dtype"] == "float16" and meta["model"] == "teacher-x"
    assert meta["vocab_size"] == 50_000
    # raw little-endian arrays: readable without this module
    total = sum(r["length"] for r in refs)
    assert (tmp_path / "ids.bin").stat().st_size == total * K * 4
    assert (tmp_path / "logprobs.bin").stat().st_size == total * K * 2
    raw = np.fromfile(tmp_path / "tokens.bin", dtype="<i4")
    assert raw[refs[5]["offset"] : refs[5]["offset"] + refs[5]["length"]].tolist() == _record(5)[1]


def test_float32_exact_and_torch_output(tmp_path):
    import torch  # not at module level: the SIGKILL child imports this file and should start fast

    _write(tmp_path, range(5), dtype="float32")
    store = TopKLogitStore(tmp_path)
    _, tokens, ids, lps, tok_lps = _record(3)
    rec = store.get("p3/0", as_torch=True)
    assert rec.topk_ids.dtype == torch.int64 and rec.token_ids.dtype == torch.int64
    assert torch.equal(rec.topk_logprobs, torch.from_numpy(lps))
    assert torch.equal(rec.token_logprobs, torch.from_numpy(tok_lps))
    assert rec.token_ids.tolist() == tokens


def test_reopen_and_append_resumes(tmp_path):
    _write(tmp_path, range(10))
    with TopKLogitWriter(tmp_path, k=K) as w:
        assert len(w) == 10 and "p9/0" in w
        with pytest.raises(KeyError):
            w.append(*_record(3))
        for i in range(10, 20):
            w.append(*_record(i))
    store = TopKLogitStore(tmp_path)
    assert len(store) == 20
    for i in range(20):
        _check(store, i)


def test_mismatched_settings_and_bad_shapes_are_errors(tmp_path):
    _write(tmp_path, range(2), model="a")
    with pytest.raises(ValueError, match="k="):
        TopKLogitWriter(tmp_path, k=K + 1)
    with pytest.raises(ValueError, match="model"):
        TopKLogitWriter(tmp_path, k=K, model="b")
    with TopKLogitWriter(tmp_path, k=K) as w:
        key, tokens, ids, lps, tok_lps = _record(5)
        with pytest.raises(ValueError, match="shape"):
            w.append(key, tokens, ids[:, :2], lps, tok_lps)
        with pytest.raises(RuntimeError, match="another writer"):
            TopKLogitWriter(tmp_path, k=K)
    assert len(TopKLogitStore(tmp_path)) == 2  # failed appends left nothing behind


def test_crash_between_data_and_index_is_recovered(tmp_path):
    _write(tmp_path, range(6))
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("*.bin")}
    # a record whose data reached disk but whose index line never did
    for p in tmp_path.glob("*.bin"):
        with open(p, "ab") as f:
            f.write(b"\x07" * 37)
    assert len(TopKLogitStore(tmp_path)) == 6  # readers ignore the unindexed tail
    _write(tmp_path, range(6, 9))  # reopening truncates, then appends
    store = TopKLogitStore(tmp_path)
    assert len(store) == 9
    for i in range(9):
        _check(store, i)
    extra = sum(_record(i)[2].shape[0] for i in range(6, 9))
    assert (tmp_path / "tokens.bin").stat().st_size == sizes["tokens.bin"] + 4 * extra


def test_truncated_last_index_line_is_dropped(tmp_path):
    _write(tmp_path, range(5))
    index = tmp_path / "index.jsonl"
    good = index.read_bytes()
    # record 5's data was written, its index line only half
    with TopKLogitWriter(tmp_path, k=K) as w:
        ref = w.append(*_record(5))
    line = json.dumps({k: ref[k] for k in ("key", "offset", "length")}) + "\n"
    assert index.read_bytes() == good + line.encode()
    index.write_bytes(good + line.encode()[:10])
    assert len(TopKLogitStore(tmp_path)) == 5
    _write(tmp_path, [5, 6])  # record 5 is written again, not duplicated
    assert index.read_bytes().count(b"\n") == 7
    store = TopKLogitStore(tmp_path)
    assert list(store.keys()) == [f"p{i}/0" for i in range(7)]
    for i in range(7):
        _check(store, i)


def test_corruption_in_the_middle_is_not_silently_truncated(tmp_path):
    _write(tmp_path, range(4))
    index = tmp_path / "index.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(lines[0] + b"{garbage\n" + b"".join(lines[2:]))
    with pytest.raises(ValueError, match="corrupt"):
        TopKLogitWriter(tmp_path, k=K)


def test_missing_data_behind_the_index_is_an_error(tmp_path):
    _write(tmp_path, range(4))
    os.truncate(tmp_path / "ids.bin", 8)
    with pytest.raises(RuntimeError, match="data lost"):
        TopKLogitWriter(tmp_path, k=K)


def test_reads_are_memmapped_views(tmp_path):
    _write(tmp_path, range(30))
    store = TopKLogitStore(tmp_path)
    rec = store.get("p12/0")
    for arr in rec:
        assert isinstance(arr, np.memmap) and not arr.flags.owndata and not arr.flags.writeable
    # the store holds maps of the files, not copies of them
    assert all(isinstance(a, np.memmap) for a in store._arrays.values())


def test_empty_store(tmp_path):
    TopKLogitWriter(tmp_path, k=K).close()
    store = TopKLogitStore(tmp_path)
    assert len(store) == 0 and list(store.keys()) == []
    with pytest.raises(KeyError):
        store.get("x")


def test_append_scored_sorts_pads_and_never_stores_twice(tmp_path):
    """A backend's score(top_k=k) rows go in sorted by log-prob, cut or padded to k (an empty
    row too, which a server may return); a key already stored returns its ref, as after a crash."""
    from llm_teach.backends.base import TokenLogprobs
    from llm_teach.data.logit_store import PAD_LOGPROB, append_scored, open_writer
    from llm_teach.errors import UserError

    scored = TokenLogprobs(token_ids=[7, 8, 9], logprobs=[-0.5, -1.0, -2.0],
                           top_k=[{3: -2.0, 7: -0.5, 1: -1.0, 4: -3.0, 5: -9.0}, {8: -1.0}, {}])
    with open_writer(tmp_path / "s", k=K) as w:
        ref = append_scored(w, "a", scored)
        assert append_scored(w, "a", TokenLogprobs([1], [0.0], [{1: 0.0}])) == ref
        with pytest.raises(UserError, match="no top-k log-probs for 'b'"):
            append_scored(w, "b", TokenLogprobs([1], [0.0], None))
        empty = append_scored(w, "empty", TokenLogprobs([], [], []))
    with open_writer(tmp_path / "s", k=K) as w:  # reopened: the stored ref comes back
        assert append_scored(w, "a", scored) == ref and w.ref("empty") == empty and "b" not in w
    rec = TopKLogitStore(tmp_path / "s").get(ref)
    assert rec.token_ids.tolist() == [7, 8, 9] and empty["length"] == 0
    assert rec.topk_ids.tolist() == [[7, 1, 3, 4], [8, 8, 8, 8], [0, 0, 0, 0]]
    np.testing.assert_allclose(rec.topk_logprobs.astype(np.float32),
                               [[-0.5, -1.0, -2.0, -3.0], [-1.0] + [PAD_LOGPROB] * 3, [PAD_LOGPROB] * 4], rtol=1e-3)
    with pytest.raises(UserError, match="store has k=4"):
        open_writer(tmp_path / "s", k=8)
