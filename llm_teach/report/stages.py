"""The report of an `llm-teach generate STAGE` run: counts kept and dropped by reason (every
stage), plus each stage's own view -- LLM2LLM's per-round accuracy and data growth, STAT's
missing-skill profile and catalog, SSB's kept/dropped problems and rollout grades, ARTE's
preference-score distributions and pair counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_teach.report import plots
from llm_teach.report.eval import provenance
from llm_teach.report.render import Report, Section, Table
from llm_teach.report.runfiles import manifest, read_json, read_records


def counts_section(found: dict[str, Any]) -> Section:
    """Output record counts and dropped items by reason (the stages count drops as `rejected/REASON`)."""
    counts = found.get("counts") or {}
    section = Section("Kept and dropped", "counts")
    dropped = {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("rejected/")}
    written = {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("records/")}
    section.tables.append(Table(["output file", "records"], [[k, v] for k, v in written.items()]))
    if dropped:
        section.tables.append(Table(["dropped because", "count"], [[k, v] for k, v in sorted(dropped.items())]))
    if written or dropped:
        labels = [f"kept: {k}" for k in written] + [f"dropped: {k}" for k in dropped]
        section.figures.append(plots.bars(labels, [*written.values(), *dropped.values()], "Records kept and dropped",
                                          "count"))
    other = {k: v for k, v in counts.items() if not k.startswith(("rejected/", "records/"))}
    section.tables.append(Table(["counter", "value"], [[k, v] for k, v in other.items()], "All other counters"))
    return section


def llm2llm_section(run_dir: Path, found: dict[str, Any]) -> Section:
    rounds = found.get("rounds") or read_records(run_dir / "rounds.jsonl")
    section = Section("LLM2LLM rounds", "rounds")
    section.tables.append(Table(["round", "seed accuracy", "wrong", "generated", "added", "data size"],
                                [[r.get("round"), r.get("seed_accuracy"), r.get("wrong"), r.get("generated"),
                                  r.get("added"), r.get("data_size")] for r in rounds]))
    if rounds:
        xs = [r.get("round", i) for i, r in enumerate(rounds)]
        section.figures.append(plots.lines({"seed accuracy": (xs, [r.get("seed_accuracy") or 0.0 for r in rounds])},
                                           "Student accuracy on the seeds per round", "round", "accuracy"))
        section.figures.append(plots.lines({"training problems": (xs, [r.get("data_size") or 0 for r in rounds])},
                                           "Data growth per round", "round", "problems"))
    replies = read_records(run_dir / "generated.jsonl")
    if replies:  # what the teacher wrote, by outcome: the first place to look when little is added
        by_outcome: dict[str, list[dict]] = {}
        for reply in replies:
            by_outcome.setdefault(str(reply.get("outcome")), []).append(reply)
        section.tables.append(Table(["outcome", "replies", "first such reply (seed)"],
                                    [[outcome, len(group), f"{_clip(group[0].get('reply'))} ({group[0].get('seed')})"]
                                     for outcome, group in sorted(by_outcome.items())],
                                    "The teacher's replies (generated.jsonl)"))
    return section


def _clip(text: Any, limit: int = 300) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit] + " ..."


def stat_section(run_dir: Path) -> Section:
    profile = read_json(run_dir / "profile.json") or {}
    catalog = read_json(run_dir / "skills.json") or {}
    section = Section("STAT missing-skill profile", "profile")
    skills = profile.get("skills") or {}
    if skills:
        names = sorted(skills, key=lambda s: -skills[s])
        section.figures.append(plots.bars(names, [skills[s] for s in names], "Missing skills (difficult problems)",
                                          "problems"))
    section.tables.append(Table(["skill", "missing in", "select quota", "synthesize quota"],
                                [[s, skills.get(s), (profile.get("sel_quota") or {}).get(s),
                                  (profile.get("syn_quota") or {}).get(s)] for s in skills]))
    section.text.append(f"Skill catalog ({catalog.get('source', '?')}): {', '.join(catalog.get('skills', []))}")
    return section


def ssb_section(run_dir: Path, found: dict[str, Any]) -> Section:
    summary = found.get("summary") or {}
    counts = found.get("counts") or {}
    section = Section("SSB problems kept and dropped", "ssb")
    problems, kept = summary.get("problems", 0), summary.get("kept", 0)
    section.tables.append(Table(["", "count"], [["problems", problems], ["kept", kept],
                                                ["dropped", problems - kept],
                                                ["rollouts correct", counts.get("rollouts/correct")],
                                                ["rollouts wrong", counts.get("rollouts/wrong")]]))
    section.figures.append(plots.bars(["correct", "wrong"], [counts.get("rollouts/correct", 0),
                                                             counts.get("rollouts/wrong", 0)], "Rollout grades",
                                      "rollouts"))
    return section


def arte_section(run_dir: Path, found: dict[str, Any]) -> Section:
    pairs = read_records(run_dir / "dpo_pairs.jsonl")
    section = Section("ARTE preference pairs", "pairs")
    levels: dict[str, int] = {}
    for pair in pairs:
        levels[str(pair.get("level"))] = levels.get(str(pair.get("level")), 0) + 1
    section.tables.append(Table(["level", "pairs"], [[k, v] for k, v in sorted(levels.items())]))
    chosen = [p["chosen_score"] for p in pairs if isinstance(p.get("chosen_score"), (int, float))]
    rejected = [p["rejected_score"] for p in pairs if isinstance(p.get("rejected_score"), (int, float))]
    if chosen or rejected:
        section.figures.append(plots.histograms({"chosen": chosen, "rejected": rejected},
                                                "Student preference scores of the DPO pairs", "score"))
    summary = found.get("summary") or {}
    section.text.append(f"Probe zero-shot accuracy {summary.get('probe_zero_shot_accuracy')}, one-shot mean "
                        f"{summary.get('probe_one_shot_accuracy_mean')}; teacher aligned: {summary.get('aligned')}.")
    return section


def build(run_dir: Path) -> Report:
    found = manifest(run_dir)
    stage = found.get("stage") or found.get("kind", "generate:?").split(":")[-1]
    report = Report(f"Generate ({stage}): {run_dir.name}", f"generate:{stage}", str(run_dir))
    overview = Section("Overview", "overview")
    models = found.get("models") or {}
    overview.text.append(f"Stage {stage}, status {found.get('status', '?')}; teacher "
                         f"{(models.get('teacher') or {}).get('spec', '?')}, student "
                         f"{(models.get('student') or {}).get('spec', '?')}.")
    overview.tables.append(Table(["summary", "value"], [[k, v] for k, v in (found.get("summary") or {}).items()]))
    report.sections += [overview, counts_section(found)]
    own = {"llm2llm": lambda: llm2llm_section(run_dir, found), "stat": lambda: stat_section(run_dir),
           "ssb": lambda: ssb_section(run_dir, found), "arte": lambda: arte_section(run_dir, found)}
    if stage in own:
        report.sections.append(own[stage]())
    report.sections.append(provenance(found))
    return report
