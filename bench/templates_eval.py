"""Quality check of the content-template catalog (issue 7).

    .venv/bin/python bench/templates_eval.py [--limit N] [--max-tokens 160] [--lang rotate]
        [--out bench/results/templates_eval.json]

1. Render latency: every template's example rendered in all 11 languages, in process
   (input checks, voice resolution, sandboxed Jinja2, style guide), several rounds.
   Target (issue 7): p95 at most 5 ms.
2. Generation: a real `polymodal` server (in this process, on loopback) with every tier
   routed to the local model (`local-smollm2`, SmolLM2-135M on the CPU) generates each
   template's example through `POST /v1/templates/{id}/generate`, so the style guide,
   the language check with its one retry, the JSON repair and the usage ledger all run
   as in production. Languages rotate over the 11 (`--lang rotate`), or one is forced.
   Reported: output-language accuracy (final answer detected as the requested language;
   also before the retry), JSON-schema validity for JSON templates (first try and after
   the repair), and generation latency.

SmolLM2-135M is tiny and writes mostly English: low language accuracy here measures the
model, not the pipeline; run the same script against a real deployment (`--model`) to
judge the catalog. `--limit N` picks N templates spread over all categories, JSON ones
in proportion.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

from polymodal.app import create_app
from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.settings import Settings
from polymodal.templates.catalog import Entry, builtin_catalog
from polymodal.templates.inputs import input_text, validate_inputs
from polymodal.templates.prompting import VoiceRequest, render, resolve_voice
from polymodal.templates.schema import LANGUAGES
from polymodal.tenancy import admin

ROOT = Path(__file__).resolve().parents[1]
RENDER_ROUNDS = 5
RENDER_TARGET_P95_MS = 5.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 3),
        "p95_ms": round(pct(ms, 0.95), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


# --- 1. render latency ---------------------------------------------------------------------------


def render_latency() -> dict[str, Any]:
    catalog = builtin_catalog()
    explicit: list[float] = []
    detected: list[float] = []
    for round_ in range(RENDER_ROUNDS):
        for entry in catalog:
            for lang in LANGUAGES:
                t0 = time.perf_counter()
                context = validate_inputs(entry.template, entry.template.example, lang)
                voice, was_detected = resolve_voice(
                    catalog, VoiceRequest(lang=lang), ui_lang="en", input_text=""
                )
                render(entry, context, voice, lang_detected=was_detected)
                if round_:  # the first round warms caches (compiled sources)
                    explicit.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()  # no lang: detected from the inputs (py3langid)
            context = validate_inputs(entry.template, entry.template.example, "en")
            text = input_text(entry.template, context)
            voice, was_detected = resolve_voice(
                catalog, VoiceRequest(), ui_lang="en", input_text=text
            )
            render(entry, context, voice, lang_detected=was_detected)
            if round_:
                detected.append((time.perf_counter() - t0) * 1000)
    both = explicit + detected
    return {
        "explicit_lang": summary(explicit),
        "detected_lang": summary(detected),
        "all": summary(both),
        "target_p95_ms": RENDER_TARGET_P95_MS,
        "meets_target": pct(both, 0.95) <= RENDER_TARGET_P95_MS,
    }


# --- 2. generation through a live server ----------------------------------------------------


class Server:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings, environ={})
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("polymodal did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def settings_for(tmp: Path, model: str, threads: int) -> Settings:
    route = [model]
    return Settings(
        environment="development",
        secret_key="bench-" + "x" * 40,
        database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        data_dir=tmp,
        routes={"simple": route, "complex": route, "critical": route},
        local_threads=threads,
        # A 135M model on a shared 2-core CPU: a 1,000-token prompt takes ~15 s before the
        # first token, and token gaps jump when the machine is busy. The adaptive deadlines
        # (tuned for cloud providers) would time these out, so fix them high.
        upstream_first_byte_timeout_s=300.0,
        upstream_idle_timeout_s=120.0,
        upstream_total_timeout_s=600.0,
        first_byte_floor_s=300.0,
        stream_idle_floor_s=120.0,
        upstream_always_stream=False,
        breaker_consecutive_failures=1000,
        breaker_min_calls=1000,
        log_json=True,
        access_log=False,
    )


async def prepare(settings: Settings) -> str:
    engine = create_engine(settings)
    await migrations.upgrade(engine)
    sessions = session_factory(engine)
    await admin.create_tenant(sessions, name="bench", actor="bench")
    await admin.add_user(sessions, tenant="bench", email="b@bench.test", role="owner", actor="b")
    issued = await admin.issue_key(sessions, tenant="bench", email="b@bench.test", actor="b")
    await engine.dispose()
    return issued.secret


def pick(limit: int | None, fmt: str | None = None) -> list[Entry]:
    """All templates (of output format ``fmt``), or ``limit`` of them spread over the
    categories (JSON in proportion)."""
    entries = [e for e in builtin_catalog() if fmt is None or e.template.output.format == fmt]
    if limit is None or limit >= len(entries):
        return entries

    def spread(items: list[Entry]) -> list[Entry]:
        by_category: dict[str, list[Entry]] = defaultdict(list)
        for e in items:
            by_category[e.template.category].append(e)
        rounds = itertools.zip_longest(*by_category.values())
        return [e for group in rounds for e in group if e is not None]

    json_entries = [e for e in entries if e.template.output.format == "json"]
    others = [e for e in entries if e.template.output.format != "json"]
    n_json = min(len(json_entries), max(1, round(limit * len(json_entries) / len(entries))))
    if not others:
        n_json = limit
    return spread(json_entries)[:n_json] + spread(others)[: limit - n_json]


def run_key(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two generations comparable: rows of other runs are not mixed in."""
    return {"model": args.model, "max_tokens": args.max_tokens, "lang_mode": args.lang}


def load_rows(path: Path, key: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows already generated under the same run key (for --resume), last one per id."""
    if not path.exists():
        return []
    by_id: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if all(row.get(k) == v for k, v in key.items()):
                by_id[row["id"]] = row
    return list(by_id.values())


def generate_all(
    base_url: str,
    key: str,
    entries: list[Entry],
    args: argparse.Namespace,
    *,
    positions: dict[str, int],
) -> list[dict[str, Any]]:
    """Generate each entry's example; every finished row is appended to ``args.rows`` at
    once, so an interrupted run keeps what it did and ``--resume`` carries on."""
    rows: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {key}"}
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    with (
        httpx.Client(base_url=base_url, headers=headers, timeout=900) as client,
        args.rows.open("a") as sink,
    ):
        for i, entry in enumerate(entries):
            # The language follows the template's place in the whole pick, not in this
            # (possibly resumed) slice, so a resumed run asks for the same languages.
            at = positions[entry.id]
            lang = LANGUAGES[at % len(LANGUAGES)] if args.lang == "rotate" else args.lang
            body: dict[str, Any] = {
                "inputs": entry.template.example,
                "max_tokens": args.max_tokens,
            }
            if lang != "auto":
                body["lang"] = lang
            t0 = time.perf_counter()
            r = client.post(f"/v1/templates/{entry.id}/generate", json=body)
            seconds = time.perf_counter() - t0
            data = r.json()
            row: dict[str, Any] = {
                "id": entry.id,
                "category": entry.template.category,
                "format": entry.template.output.format,
                "lang": lang,
                "status": r.status_code,
                "seconds": round(seconds, 3),
            }
            if r.status_code == 200:
                row.update(
                    lang=data["lang"],
                    output_language=data["output_language"],
                    language_retry=data["language_retry"],
                    json_repaired=data["json_repaired"],
                    calls=data["calls"],
                    completion_tokens=data["usage"]["completion_tokens"],
                    output_chars=len(data["output"]),
                )
            else:
                row["error"] = data.get("error", {}).get("code")
            row.update(run_key(args))
            rows.append(row)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            ok = row.get("output_language") == row.get("lang")
            print(
                f"  [{i + 1:>3}/{len(entries)}] {entry.id:<34} {row['lang']:<4} "
                f"{r.status_code} {seconds:6.1f}s "
                + (
                    f"out={row.get('output_language')} {'ok' if ok else 'WRONG'}"
                    + (" retried" if row.get("language_retry") else "")
                    if r.status_code == 200
                    else f"error={row['error']}"
                ),
                flush=True,
            )
    return rows


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["status"] == 200]
    correct = [r for r in done if r["output_language"] == r["lang"]]
    first_try = [r for r in correct if not r["language_retry"]]
    json_rows = [r for r in rows if r["format"] == "json"]
    json_valid = [r for r in json_rows if r["status"] == 200]
    json_first = [r for r in json_valid if not r["json_repaired"]]
    by_lang: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "correct": 0})
    for r in done:
        by_lang[r["lang"]]["n"] += 1
        by_lang[r["lang"]]["correct"] += r["output_language"] == r["lang"]
    seconds = [r["seconds"] * 1000 for r in rows]

    def rate(part: list[Any], whole: list[Any]) -> float | None:
        return round(len(part) / len(whole), 3) if whole else None

    return {
        "generations": len(rows),
        "succeeded": len(done),
        "errors": dict(Counter(r.get("error") for r in rows if r["status"] != 200)),
        "language_accuracy": rate(correct, done),
        "language_accuracy_first_try": rate(first_try, done),
        "language_retries": sum(1 for r in done if r["language_retry"]),
        "language_by_requested": dict(sorted(by_lang.items())),
        "json_templates": len(json_rows),
        "json_valid_rate": rate(json_valid, json_rows),
        "json_valid_first_try_rate": rate(json_first, json_rows),
        "generation_latency": summary(seconds),
        "completion_tokens_mean": round(statistics.fmean(r["completion_tokens"] for r in done), 1)
        if done
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="templates to generate")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--lang", default="rotate", help="rotate | auto | one of the 11")
    parser.add_argument("--model", default="local-smollm2", help="deployment to route to")
    parser.add_argument(
        "--format",
        default=None,
        choices=("markdown", "plain", "html", "json"),
        help="only templates with this output format",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on 2 cores)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/templates_eval.json")
    parser.add_argument(
        "--rows",
        type=Path,
        default=ROOT / "bench/results/templates_eval_rows.jsonl",
        help="per-template results, appended as each finishes",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip templates already in --rows for this model, max tokens and language mode",
    )
    args = parser.parse_args()
    if args.lang not in ("rotate", "auto", *LANGUAGES):
        parser.error(f"--lang: rotate, auto or one of {', '.join(LANGUAGES)}")

    print("render latency (in process, all templates x 11 languages) ...", flush=True)
    render_stats = render_latency()

    entries = pick(args.limit, args.format)
    positions = {e.id: i for i, e in enumerate(entries)}
    wanted = set(positions)
    earlier = [r for r in load_rows(args.rows, run_key(args)) if r["id"] in wanted]
    if args.resume:
        done_ids = {r["id"] for r in earlier}
        entries = [e for e in entries if e.id not in done_ids]
        print(f"resuming: {len(done_ids)} done earlier, {len(entries)} to go", flush=True)
    else:
        earlier = []
    print(f"generating {len(entries)} templates with {args.model} ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), args.model, args.threads)
        key = asyncio.run(prepare(settings))
        started = time.perf_counter()
        with Server(settings) as server:
            base = f"http://127.0.0.1:{server.port}"
            rows = earlier + generate_all(base, key, entries, args, positions=positions)
        wall = time.perf_counter() - started
    scores = score(rows)

    r = render_stats["all"]
    g = scores["generation_latency"]
    table = [
        ("render p50 / p95 / p99 (ms)", f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']}"),
        ("render p95 target <= 5 ms", "met" if render_stats["meets_target"] else "MISSED"),
        ("generations (ok / all)", f"{scores['succeeded']} / {scores['generations']}"),
        ("output-language accuracy", str(scores["language_accuracy"])),
        ("  before the retry", str(scores["language_accuracy_first_try"])),
        ("  retries", str(scores["language_retries"])),
        (
            "JSON-schema valid (JSON templates)",
            f"{scores['json_valid_rate']} of {scores['json_templates']}",
        ),
        ("  valid on the first try", str(scores["json_valid_first_try_rate"])),
        ("generation p50 / p95 (s)", f"{g['p50_ms'] / 1000:.1f} / {g['p95_ms'] / 1000:.1f}"),
        ("errors", json.dumps(scores["errors"])),
        ("wall time (s)", f"{wall:.0f}"),
    ]
    width = max(len(k) for k, _ in table)
    print()
    for k, v in table:
        print(f"{k:<{width}}  {v}")
    print("\nlanguage accuracy by requested language:")
    for lang, c in scores["language_by_requested"].items():
        print(f"  {lang}: {c['correct']}/{c['n']}")

    result = {
        "benchmark": "templates_eval",
        "machine": machine_info(),
        "settings": {
            "model": args.model,
            "max_tokens": args.max_tokens,
            "lang": args.lang,
            "limit": args.limit,
            "format": args.format,
            "threads": args.threads,
        },
        "render": render_stats,
        "generation": scores,
        "wall_seconds": round(wall, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
