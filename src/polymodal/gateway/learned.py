"""The classifier's learned scorer: a linear model over hashed text n-grams and the rules'
own features, with two heads (task: softmax over the nine tasks; difficulty: P(hard)).

`scripts/train_router.py` fits it on `bench/data/routing_prompts.jsonl` and writes
`router_model.npz` (weights) and `router_model.json` (feature config, classes, threshold,
metrics, provenance) next to this file; `Classifier` uses it when both files are there.

Features of one message (training and inference call the same `features`):

- the text: NFKC, lower case, every decimal digit replaced by "0" (so "12345 + 67890"
  and "31416 + 27182" share their n-grams: the *shape* of a number is a signal, its value
  is not), whitespace runs collapsed; a long message keeps `window` characters at each end;
- word unigrams and bigrams over `\\w+` tokens, each word keyed by `zlib.crc32` of its UTF-8
  bytes; a bigram's key is ``crc(a) * P + crc(b)``;
- character 3- to 5-grams over the text padded with one space at each end, keyed by the
  polynomial ``n, then key = key * P + code point`` over the gram's Unicode code points;
- every key lands in one of ``2**bucket_bits`` buckets: the top `bucket_bits` bits of
  ``(key ^ namespace) * 0x9E3779B97F4A7C15 mod 2**64`` (Fibonacci hashing; one namespace
  constant per kind of gram). All arithmetic is unsigned 64-bit and wraps, so numpy
  computes the same buckets on every platform;
- each kind of gram counts occurrences, scaled by 1/sqrt(number of grams of that kind);
- then the rule features the classifier computes (cue counts, code and math notation,
  the rules' task, length and digit shapes), named in the model's JSON, at indices
  ``2**bucket_bits + i``.

Scoring gathers the weight rows of the active indices only (a few hundred for a short
message, about 3,000 at the window's limit): featurising and scoring take 0.1-0.3 ms.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HASH_SCHEME = "polymodal-ngram-hash-v1"  # bump when any detail above changes
MODEL_NPZ = "router_model.npz"
MODEL_JSON = "router_model.json"

_P = np.uint64(1_000_003)
_FIB = np.uint64(0x9E3779B97F4A7C15)
_NS_WORD = np.uint64(0x5745_4F52_445F_3031)
_NS_BIGRAM = np.uint64(0x4249_4752_414D_5F32)
_NS_CHAR = np.uint64(0x4348_4152_5F4E_4733)
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"\w+")

Indices = npt.NDArray[np.int64]
Values = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    bucket_bits: int = 17
    char_ngram_min: int = 3
    char_ngram_max: int = 5
    window: int = 500  # characters kept at each end of a long message
    rule_features: tuple[str, ...] = ()

    @property
    def n_buckets(self) -> int:
        return 1 << self.bucket_bits

    @property
    def n_features(self) -> int:
        return self.n_buckets + len(self.rule_features)

    def as_json(self) -> dict[str, Any]:
        return {
            "hash_scheme": HASH_SCHEME,
            "bucket_bits": self.bucket_bits,
            "char_ngram_min": self.char_ngram_min,
            "char_ngram_max": self.char_ngram_max,
            "window": self.window,
            "rule_features": list(self.rule_features),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureConfig:
        if data.get("hash_scheme") != HASH_SCHEME:
            raise ValueError(f"model hashes with {data.get('hash_scheme')!r}, not {HASH_SCHEME}")
        return cls(
            bucket_bits=int(data["bucket_bits"]),
            char_ngram_min=int(data["char_ngram_min"]),
            char_ngram_max=int(data["char_ngram_max"]),
            window=int(data["window"]),
            rule_features=tuple(data["rule_features"]),
        )


def normalise(text: str, window: int) -> str:
    if len(text) > 2 * window:
        text = text[:window] + " " + text[-window:]
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_DIGIT.sub("0", text).split())  # split() breaks where `\s` matches


_MASK64 = (1 << 64) - 1


@cache
def _seed(n: int) -> np.uint64:
    """``n * P**n mod 2**64``: what starting a gram's key at ``n`` adds to the plain
    polynomial of its code points."""
    return np.uint64(n * pow(int(_P), n, 1 << 64) & _MASK64)


@cache
def _rule_indices(config: FeatureConfig) -> Indices:
    return np.arange(config.n_buckets, config.n_features, dtype=np.int64)


def text_features(text: str, config: FeatureConfig) -> tuple[Indices, Values]:
    """Hashed word 1-2-grams and character n-grams of ``text`` (raw message text).

    Written for few numpy calls (their fixed cost, not the arithmetic, dominates short
    messages): all keys go through one multiply-shift, and each n-gram length extends the
    previous one's polynomial."""
    norm = normalise(text, config.window)
    keys: list[npt.NDArray[np.uint64]] = []
    counts: list[int] = []
    words = _WORD.findall(norm)
    if words:
        crc = np.fromiter(map(zlib.crc32, map(str.encode, words)), np.uint64, len(words))
        keys.append(crc ^ _NS_WORD)
        counts.append(len(crc))
        if len(crc) > 1:
            keys.append((crc[:-1] * _P + crc[1:]) ^ _NS_BIGRAM)
            counts.append(len(crc) - 1)
    points = np.frombuffer(f" {norm} ".encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    poly = points
    chars = 0
    for n in range(2, config.char_ngram_max + 1):
        count = len(points) - n + 1
        if count <= 0:
            break
        poly = poly[:count] * _P + points[n - 1 : n - 1 + count]
        if n >= config.char_ngram_min:
            keys.append((poly + _seed(n)) ^ _NS_CHAR)
            chars += count
    if chars:
        counts.append(chars)
    if not keys:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    buckets = (np.concatenate(keys) * _FIB >> np.uint64(64 - config.bucket_bits)).astype(np.int64)
    scales = np.array([1.0 / math.sqrt(c) for c in counts], dtype=np.float32)
    return buckets, np.repeat(scales, counts)


def features(
    text: str, rules: Mapping[str, float], config: FeatureConfig
) -> tuple[Indices, Values]:
    """All active features of one message: hashed text, then the named rule features (all
    of them; a zero adds nothing)."""
    idx, val = text_features(text, config)
    names = config.rule_features
    rule_val = np.fromiter(map(rules.get, names, repeat(0.0)), np.float32, len(names))
    return np.concatenate([idx, _rule_indices(config)]), np.concatenate([val, rule_val])


@dataclass(frozen=True, slots=True)
class LearnedScore:
    task: str
    task_probability: float
    p_hard: float


class LearnedScorer:
    """Weights ``(n_features, n_tasks + 1)``: the task logits, then the hard logit."""

    def __init__(
        self,
        *,
        weights: npt.NDArray[np.floating[Any]],
        bias: npt.NDArray[np.floating[Any]],
        tasks: tuple[str, ...],
        config: FeatureConfig,
        hard_threshold: float,
        task_min_probability: float,
        min_chars: int = 0,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """``min_chars``: the shortest training prompt. A shorter message lies outside
        what the model has seen (and the shortest training prompts are all hard ones), so
        the classifier does not ask the model about it."""
        if weights.shape != (config.n_features, len(tasks) + 1):
            raise ValueError(f"weights {weights.shape} do not match the feature config")
        self._w = np.asarray(weights, dtype=np.float32)
        self._b = np.asarray(bias, dtype=np.float32)
        self.tasks = tasks
        self.config = config
        self.hard_threshold = hard_threshold
        self.task_min_probability = task_min_probability
        self.min_chars = min_chars
        self.meta: Mapping[str, Any] = meta or {}

    def logits(self, idx: Indices, val: Values) -> npt.NDArray[np.float32]:
        # np.take gathers rows about twice as fast as fancy indexing here.
        out: npt.NDArray[np.float32] = val @ np.take(self._w, idx, axis=0) + self._b
        return out

    def score(self, text: str, rules: Mapping[str, float]) -> LearnedScore:
        z = self.logits(*features(text, rules, self.config))
        task_z = z[:-1] - z[:-1].max()
        p = np.exp(task_z)
        p /= p.sum()
        best = int(p.argmax())
        p_hard = 1.0 / (1.0 + math.exp(-float(z[-1])))
        return LearnedScore(self.tasks[best], float(p[best]), p_hard)

    @classmethod
    def load(cls, npz_path: Path, json_path: Path) -> LearnedScorer:
        meta: dict[str, Any] = json.loads(json_path.read_text("utf-8"))
        with np.load(npz_path) as data:
            weights, bias = data["weights"], data["bias"]
        return cls(
            weights=weights,
            bias=bias,
            tasks=tuple(meta["tasks"]),
            config=FeatureConfig.from_json(meta["features"]),
            hard_threshold=float(meta["hard_threshold"]),
            task_min_probability=float(meta["task_min_probability"]),
            min_chars=int(meta["min_chars"]),
            meta=meta,
        )

    def save(self, npz_path: Path, json_path: Path, meta: Mapping[str, Any]) -> None:
        """Weights as float16 (their precision is far below what routing can notice),
        zlib-compressed; float32 again in memory."""
        np.savez_compressed(npz_path, weights=self._w.astype(np.float16), bias=self._b)
        body = {
            **meta,
            "tasks": list(self.tasks),
            "features": self.config.as_json(),
            "hard_threshold": self.hard_threshold,
            "task_min_probability": self.task_min_probability,
            "min_chars": self.min_chars,
        }
        json_path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", "utf-8")


def packaged_model_paths() -> tuple[Path, Path]:
    here = Path(str(resources.files("polymodal.gateway")))
    return here / MODEL_NPZ, here / MODEL_JSON


@cache
def load_scorer(npz_path: Path, json_path: Path) -> LearnedScorer | None:
    """The scorer in these files, loaded once per process; None when either is missing."""
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    return LearnedScorer.load(npz_path, json_path)
