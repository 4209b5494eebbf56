"""The teacher fleet's rules (least-loaded choice, taking a failing server out, its cool-down
and trial) as pure functions, and how several URLs are read from an option."""

from __future__ import annotations

import pytest

from llm_teach.backends.fleet import (FleetConfig, ServerState, all_down, available, pick, record_failure,
                                      record_success)
from llm_teach.cli.options import backend_options
from llm_teach.credentials import mask_text, split_urls
from llm_teach.errors import UserError

CFG = FleetConfig(fail_threshold=3, cooldown=10.0)


def test_pick_takes_the_least_loaded_and_ties_go_to_the_first():
    servers = [ServerState(in_flight=2), ServerState(in_flight=1), ServerState(in_flight=1)]
    assert pick(servers, now=0.0) == 1
    servers[1].in_flight = 3
    assert pick(servers, now=0.0) == 2
    servers[2].in_flight = 5
    assert pick(servers, now=0.0) == 0


def test_a_server_is_taken_out_at_the_threshold_of_failures_in_a_row_only():
    s = ServerState()
    for _ in range(2):
        record_failure(s, "connection error", now=0.0, config=CFG)
    record_success(s)  # a success in between: the count starts again
    record_failure(s, "connection error", now=0.0, config=CFG)
    record_failure(s, "connection error", now=0.0, config=CFG)
    assert s.out_until is None and s.failures == 4 and available(s, 0.0)
    record_failure(s, "HTTP 503", now=1.0, config=CFG)
    assert s.out_until == 11.0 and s.taken_out == 1 and s.last_error == "HTTP 503"


def test_out_servers_are_skipped_until_the_cool_down_ends_then_get_one_trial():
    busy, down = ServerState(in_flight=7), ServerState(out_until=10.0, taken_out=1)
    assert pick([down, busy], now=5.0) == 1  # however loaded, the one in rotation
    assert pick([down, busy], now=10.0) == 0  # cool-down over: on trial (0 in flight)
    down.in_flight = 1
    assert pick([down, busy], now=10.0) == 1  # one trial request at a time
    down.in_flight = 0
    record_failure(down, "connection error", now=10.0, config=CFG)  # the trial failed: out again at once
    assert down.out_until == 20.0 and down.taken_out == 2 and down.in_a_row == 1
    record_success(down)  # ...or it succeeded: back in rotation
    assert down.out_until is None and available(down, 10.0)


def test_all_down_only_when_no_server_can_still_be_tried():
    a, b = ServerState(out_until=10.0), ServerState(out_until=12.0)
    assert all_down([a, b], now=5.0)
    assert not all_down([a, b], now=10.0)  # a's cool-down is over: it gets a trial first
    b.out_until = None
    assert not all_down([a, b], now=5.0)
    b.out_until, a.in_flight = 12.0, 1  # a trial still in flight may bring a back
    assert not all_down([a, b], now=5.0)
    assert pick([a, b], now=5.0) is None


def test_fleet_config_bounds():
    with pytest.raises(UserError, match="fail_threshold"):
        FleetConfig(fail_threshold=0)
    with pytest.raises(UserError, match="cooldown"):
        FleetConfig(cooldown=-1)


def test_urls_from_a_repeated_option_or_commas_and_each_is_masked():
    assert split_urls(["http://a:1/v1", "http://b:2/v1, http://c:3/v1"]) == ["http://a:1/v1", "http://b:2/v1",
                                                                               "http://c:3/v1"]
    assert split_urls("http://a:1/v1") == ["http://a:1/v1"] and split_urls(None) == []
    with pytest.raises(ValueError, match="listed twice"):
        split_urls("http://a:1/v1,http://a:1/v1")
    assert mask_text("--base-url http://a:1/v1,http://u:pw@b:2/v1") == "--base-url http://a:1/v1,http://u:***@b:2/v1"
    opts = backend_options("openai", ["http://a:1/v1", "http://b:2/v1"], None, 8, "auto", 1, 1, prefix="--teacher-")
    assert opts.base_url == "http://a:1/v1,http://b:2/v1"
    with pytest.raises(UserError, match="--teacher-base-url: the server URL carries a credential"):
        backend_options("openai", ["http://a:1/v1", "http://b:2/v1?api_key=x"], None, 8, "auto", 1, 1,
                        prefix="--teacher-")


def test_a_stage_manifest_records_the_served_backends_per_server_counts(tmp_path):
    """Stages reach a fleet through `Metered`; the backend's live `stats` (what FleetTransport
    fills) land in manifest.json under `backend_stats.<role>`."""
    from llm_teach.data import load_problems
    from llm_teach.stages.roles import Models
    from llm_teach.stages.ssb import SSBConfig, ssb
    from stage_cases import ssb_models

    problems = load_problems("rg:chain_sum", limit=2)
    model = ssb_models(problems)
    model.stats = {"requests": 0, "servers": [{"server": "http://a:1/v1", "requests": 0}]}
    real_generate = model.generate

    def generate(prompts, n, sampling):  # counts like a served backend would
        model.stats["requests"] += len(prompts)
        model.stats["servers"][0]["requests"] += len(prompts)
        return real_generate(prompts, n, sampling)

    model.generate = generate
    manifest = ssb(problems, Models.of(model), SSBConfig(chunk_size=1, top_k=3, rollouts=4), tmp_path)
    # one model in both roles (self-distillation): one backend, one stats dict, seen by both
    generated = sum(role["prompts"] for role in manifest["usage"].values())
    assert manifest["backend_stats"]["student"] is not None
    assert generated >= 4 and manifest["backend_stats"]["teacher"] == {
        "requests": generated, "servers": [{"server": "http://a:1/v1", "requests": generated}]}
