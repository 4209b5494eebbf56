"""Keep generated problems honest: drop ones that overlap evaluation sets or repeat existing data.

Two different questions, two tools:

* Contamination (`Decontaminator`): does a generated problem share a long word n-gram with a
  problem of GSM8K test, MATH-500 or a file given with `--decontaminate PATH`? Then training
  on it would leak the benchmark into the student, and reported gains would be fake. The
  reference sets come from `../shared/data/<name>/test.jsonl` beside the repository when
  present, else from the Hugging Face Hub. A set that cannot be had stops the run with an error
  naming it and the way out (`--no-decontaminate`, i.e. `decontamination.enabled=false`): an
  offline machine must not quietly train on test problems. Turning the check off is recorded
  in the manifest (`decontamination: {"disabled": ...}`).
* Near-duplicates (`NearDuplicates`): is a generated problem almost the same text as one we
  already have (ROUGE-L F1 at or above a threshold: Self-Instruct uses 0.7; LLM2LLM, whose
  problems are deliberate variants of a seed, 0.95)? Then it adds no information and
  over-weights one item. The threshold belongs to the stage's config.

ROUGE-L comes from Google's `rouge-score` package (pure Python LCS). Comparing a candidate
with thousands of texts is kept cheap by a bound: ROUGE-L F1 can never exceed the unigram F1
(an LCS is a common multiset of tokens), so only texts whose unigram overlap could reach the
threshold get the quadratic LCS.
"""

from __future__ import annotations

import copy as _copy
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from llm_teach.config import check_fields, option
from llm_teach.errors import UserError

BENCHMARK_FILES = {"gsm8k": "gsm8k/test.jsonl", "math500": "math500/test.jsonl"}
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class DecontamConfig:
    """Which evaluation sets generated problems are checked against, and how."""

    enabled: bool = option(
        "Check generated problems against evaluation sets at all; false (`--no-decontaminate`) proceeds without "
        "the check, and the manifest says so.", True)
    benchmarks: list[str] = option("Test splits checked (gsm8k, math500); one that cannot be loaded is an error.",
                                   factory=lambda: ["gsm8k", "math500"])
    paths: list[str] = option("More problem files to check against (--decontaminate PATH).", factory=list)
    ngram: int = option("Words in a shared span that counts as overlap (13, as in the GPT-3 contamination study).", 13)

    def __post_init__(self) -> None:
        check_fields(self, ngram=">= 1")


# The two filter settings of a stage that writes new problems from the input (STAT-Syn, ARTE),
# declared once; `what` is how the stage's help names what it writes. (LLM2LLM's variants of a
# seed keep their own wording and its reference's 0.95.)
def near_duplicate_option(what: str) -> Any:
    """The `near_duplicate_rouge_l` config field (for `NearDuplicates`)."""
    return option(f"Drop {what} at least this ROUGE-L-similar to the input or to each other (Self-Instruct's "
                  "0.7; the paper describes no such filter).", 0.7)


def decontamination_option(what: str) -> Any:
    """The `decontamination` config field (a `DecontamConfig`, for `Decontaminator.from_config`)."""
    return option(f"Evaluation sets {what} must not overlap (word n-grams); `--decontaminate` adds files.",
                  factory=DecontamConfig)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def shared_data_dir() -> Path:
    """`../shared/data` beside the repository (a source checkout's sibling folder)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


class Decontaminator:
    """Word n-gram index over reference problems; `match(text)` names the set a text overlaps."""

    def __init__(self, references: dict[str, Iterable[str]], ngram: int = 13):
        if ngram < 1:
            raise UserError(f"decontamination ngram must be at least 1 (got {ngram})")
        self.ngram = ngram
        self.grams: dict[tuple[str, ...], str] = {}
        self.sizes: dict[str, int] = {}
        whole: dict[str, list[str]] = {}
        for name, texts in references.items():
            count = 0
            for text in texts:
                tokens = words(text)
                for gram in _ngrams(tokens, ngram):
                    self.grams.setdefault(gram, name)
                whole.setdefault(name, []).append(" ".join(tokens))
                count += 1
            self.sizes[name] = count
        # Texts shorter than n words are checked as a contiguous word span of a reference.
        self._joined = {name: " | ".join(f" {t} " for t in ts) for name, ts in whole.items()}

    @classmethod
    def from_config(cls, config: DecontamConfig) -> tuple["Decontaminator", dict[str, object]]:
        """Load the reference sets; return the index and a report for the manifest
        (`{name: number of problems}`, or `{"disabled": why}` when the check is off).

        Raises:
            UserError: a benchmark set cannot be loaded (naming it and `--no-decontaminate`),
                is unknown, or a `--decontaminate` file is missing.
        """
        from llm_teach.data.problems import load_problems

        if not config.enabled:
            print("warning: decontamination is off (--no-decontaminate): generated problems are not checked "
                  "against evaluation sets", file=sys.stderr)
            return cls({}, config.ngram), {"disabled": "--no-decontaminate (decontamination.enabled=false): "
                                                       "generated problems were not checked against evaluation sets"}
        references: dict[str, list[str]] = {}
        for name in config.benchmarks:
            if name not in BENCHMARK_FILES:
                raise UserError(f"decontamination: unknown benchmark '{name}' (known: {', '.join(BENCHMARK_FILES)})")
            local = shared_data_dir() / BENCHMARK_FILES[name]
            try:
                problems = load_problems(str(local)) if local.is_file() else load_problems(name, split="test")
            except UserError as exc:
                raise UserError(f"decontamination: cannot load the {name} test set ({exc}); put a copy at {local} "
                                f"or pass --no-decontaminate (decontamination.enabled=false) to proceed without "
                                f"checking generated problems against it") from None
            references[name] = [p.question for p in problems]
        for path in config.paths:
            if not Path(path).exists():
                raise UserError(f"--decontaminate {path}: file not found")
            references[path] = [p.question for p in load_problems(path)]
        index = cls(references, config.ngram)
        return index, dict(index.sizes)

    def match(self, text: str) -> str | None:
        tokens = words(text)
        if not tokens:
            return None
        if len(tokens) < self.ngram:
            needle = f" {' '.join(tokens)} "
            return next((name for name, hay in self._joined.items() if needle in hay), None)
        return next((self.grams[g] for g in _ngrams(tokens, self.ngram) if g in self.grams), None)


def admit(question: str, decontaminator: "Decontaminator", seen: "NearDuplicates", counts: Counter) -> bool:
    """Admit a generated problem only if it overlaps no evaluation set and repeats nothing
    seen so far; an admitted one joins `seen`. Rejections are counted by reason in `counts`
    (`rejected/contaminated` + `decontamination/dropped/<set>`, `rejected/near_duplicate`)."""
    overlap = decontaminator.match(question)
    if overlap is not None:
        counts["rejected/contaminated"] += 1
        counts[f"decontamination/dropped/{overlap}"] += 1
        return False
    if not seen.keep(question):
        counts["rejected/near_duplicate"] += 1
        return False
    return True


def drop_near_duplicates(records: Iterable[dict], seen: "NearDuplicates", counts: Counter,
                         key: str = "question") -> list[dict]:
    """The records whose `key` is no near-duplicate of `seen` nor of an earlier kept record
    (first kept, in order); each drop is counted as `rejected/near_duplicate`. Kept texts join
    `seen` (hand in `seen.copy()` to keep a shared index unchanged)."""
    kept = []
    for record in records:
        if seen.keep(record[key]):
            kept.append(record)
        else:
            counts["rejected/near_duplicate"] += 1
    return kept


def _ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class NearDuplicates:
    """Texts seen so far; `find(text)` returns the best ROUGE-L F1 match at or above the
    threshold as `(score, text)`, else None. `add` texts as they are accepted (or `keep`:
    find and add in one). `copy()` is cheap: build the index over a large pool once and give
    each independent piece of work its own copy."""

    def __init__(self, threshold: float = 0.7, texts: Iterable[str] = ()):
        from rouge_score import rouge_scorer, tokenizers

        self.threshold = threshold
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._texts: list[tuple[str, Counter, int]] = []
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        tokens = self._tokenizer.tokenize(text)
        self._texts.append((text, Counter(tokens), len(tokens)))

    def copy(self) -> "NearDuplicates":
        """An independent copy (texts added to it do not reach this one); the pool is not
        re-tokenized."""
        other = _copy.copy(self)
        other._texts = list(self._texts)
        return other

    def keep(self, text: str) -> bool:
        """True (and `text` is added) when it is no near-duplicate of a text seen so far."""
        if self.find(text) is not None:
            return False
        self.add(text)
        return True

    def find(self, text: str) -> tuple[float, str] | None:
        tokens = self._tokenizer.tokenize(text)
        bag, size = Counter(tokens), len(tokens)
        best: tuple[float, str] | None = None
        for other, other_bag, other_size in self._texts:
            if not size or not other_size:
                continue
            overlap = sum((bag & other_bag).values())
            if 2 * overlap / (size + other_size) < self.threshold:  # unigram F1 bounds ROUGE-L F1
                continue
            score = self._scorer.score(other, text)["rougeL"].fmeasure
            if score >= self.threshold and (best is None or score > best[0]):
                best = (score, other)
        return best
