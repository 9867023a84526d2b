"""The one typed settings object, validated at start-up.

Sources, strongest first: keyword arguments, ``POLYMODAL_*`` environment variables, the
YAML file named by ``POLYMODAL_CONFIG`` (default ``./polymodal.yaml``, optional), then the
defaults below. Every timeout, TTL and threshold of the product is a field here, with its
default and the reason for it in the field's description; the README's configuration
reference is generated from these descriptions (``polymodal config-docs``).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "POLYMODAL_"
CONFIG_ENV = "POLYMODAL_CONFIG"
DEFAULT_CONFIG_FILE = "polymodal.yaml"
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev-secret"})
_DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# Environment variables with our prefix that are not settings: the config-file pointer
# and the test suite's own service URLs.
_NON_SETTING_ENV = (CONFIG_ENV, "POLYMODAL_TEST_")


class SettingsError(Exception):
    """A setting is wrong; the message is one line that names it."""


class PriceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(default=Decimal(0), ge=0)


class DeploymentSpec(BaseModel):
    """One entry of ``deployments:`` in polymodal.yaml (see src/polymodal/catalog.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    base_url: str = ""
    api_key_env: str | None = None
    price: PriceSpec
    context_window: int = Field(ge=1)
    capabilities: list[str] = Field(min_length=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    dimensions: int | None = Field(default=None, ge=1)
    # Speak HTTP/2 to this deployment's origin (negotiated over https; prior knowledge
    # over plain http). Off by default: HTTP/1.1 with keep-alive costs less CPU per call.
    http2: bool = False
    enabled: bool = True


class RoutesSpec(BaseModel):
    """``routes:`` in polymodal.yaml: ordered candidate deployments per tier, optional
    per-task overrides, and optional hedging delays per tier (milliseconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    simple: list[str] = Field(
        default_factory=lambda: [
            "deepseek-chat",
            "openai-gpt-4o-mini",
            "gemini-2.0-flash-lite",
            "local-smollm2",
        ]
    )
    # complex: strong reasoning at a fraction of the top model's price; critical: the top
    # model. Deployments whose key is unset are skipped, so on the embedded profile every
    # tier ends on the local model.
    complex: list[str] = Field(
        default_factory=lambda: [
            "openai-o4-mini",
            "deepseek-reasoner",
            "gemini-2.5-pro",
            "anthropic-claude-sonnet",
            "local-smollm2",
        ]
    )
    critical: list[str] = Field(
        default_factory=lambda: [
            "anthropic-claude-opus",
            "openai-gpt-4.1",
            "anthropic-claude-sonnet",
            "gemini-2.5-pro",
            "local-smollm2",
        ]
    )
    tasks: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    hedge_ms: dict[str, float] = Field(
        default_factory=dict,
        description="Per tier: after this long without a first byte, also start the next "
        "candidate. Unset tiers do not hedge.",
    )


class PlanLimitsSpec(BaseModel):
    """One plan's default rate limits (``plan_limits:`` in polymodal.yaml); tenants and
    keys may have their own overrides within them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int = Field(ge=1)
    tokens_per_minute: int = Field(ge=1)


def _default_plan_limits() -> dict[str, PlanLimitsSpec]:
    # free: a person trying the product; pro: a small team's app in production;
    # enterprise: a busy product. Operators tune these in polymodal.yaml.
    return {
        "free": PlanLimitsSpec(requests_per_minute=60, tokens_per_minute=200_000),
        "pro": PlanLimitsSpec(requests_per_minute=600, tokens_per_minute=2_000_000),
        "enterprise": PlanLimitsSpec(requests_per_minute=6000, tokens_per_minute=20_000_000),
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    environment: Literal["development", "test", "production"] = Field(
        default="development",
        description="`development` allows placeholder secrets; `production` refuses them.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr("change-me"),
        description="Server secret (signing, key derivation). Must be a real secret "
        "(32+ characters) outside development.",
    )
    data_dir: Path = Field(
        default=Path("./data"),
        description="Folder for the embedded profile's files (SQLite database, demo key, "
        "local vectors and objects).",
    )

    # --- HTTP server -------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address `polymodal serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `polymodal serve` binds.")
    workers: int = Field(default=1, ge=1, le=64, description="Uvicorn worker processes.")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; larger bodies get 413.",
    )

    # --- metadata database ----------------------------------------------------------
    database_url: str = Field(
        default="sqlite+aiosqlite:///./data/polymodal.db",
        description="SQLAlchemy URL: `sqlite+aiosqlite:///path` (embedded) or "
        "`postgresql+asyncpg://user@host/db` (production).",
    )
    database_schema: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema to use (search_path); unset uses the server default.",
    )
    database_pool_size: int = Field(
        default=10, ge=1, description="Connections kept per process (PostgreSQL)."
    )
    database_connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Give up connecting to the database after this long.",
    )
    database_rls_role: str = Field(
        default="polymodal_app",
        pattern=r"^([a-z_][a-z0-9_]{0,62})?$",
        description="PostgreSQL role every pooled connection switches to (`SET ROLE`), "
        "created by `polymodal migrate` without SUPERUSER or BYPASSRLS, so Row-Level "
        "Security holds even when the URL's user could bypass it; that user (the "
        "migrator and owner) serves only the documented cross-tenant lookups. Empty "
        "runs everything as the URL's user.",
    )

    # --- cache, limits, pub/sub -------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis URL for shared cache, limits and breaker state; unset keeps "
        "them in-process (one process only).",
    )
    redis_key_prefix: str = Field(
        default="polymodal:",
        min_length=1,
        description="Prefix of every Redis key polymodal writes, so deployments can share a Redis.",
    )
    redis_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="Socket timeout for Redis calls; a slow Redis degrades, never hangs.",
    )
    redis_max_connections: int = Field(
        default=256,
        ge=1,
        description="Redis connections per process; a burst beyond them waits up to "
        "redis_timeout_s for a free one (rate limits and budgets make one or two calls per "
        "request).",
    )
    memory_cache_max_entries: int = Field(
        default=100_000,
        ge=1,
        description="Entries the in-process cache keeps before evicting the least recently used.",
    )

    # --- vectors and objects (used from the RAG and media issues on) -------------------
    qdrant_url: str | None = Field(
        default=None,
        description="Qdrant server URL; unset uses the embedded index (qdrant_embedded_engine).",
    )
    storage_url: str = Field(
        default="file://./data/objects",
        description="Object store: `file://folder` (embedded) or `s3://bucket/prefix`.",
    )

    # --- knowledge bases (RAG) -------------------------------------------------------------
    qdrant_path: Path | None = Field(
        default=None,
        description="Folder of the embedded index when qdrant_url is unset; unset uses "
        "`<data_dir>/qdrant-edge` (or `<data_dir>/qdrant` for the client engine). One "
        "process only: the folder is locked while open.",
    )
    qdrant_embedded_engine: Literal["edge", "client"] = Field(
        default="edge",
        description="The embedded index when qdrant_url is unset: `edge` = Qdrant Edge, "
        "Qdrant's engine in-process (~30 ms per query at 100k chunks); `client` = "
        "qdrant-client's pure-Python local mode (scans every point; for tests of the "
        "server code path).",
    )
    qdrant_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one call to a Qdrant server."
    )
    ingest_queue: Literal["auto", "in-process", "celery"] = Field(
        default="auto",
        description="Where ingestion jobs run: `celery` (queue `ingest` on redis_url), "
        "`in-process` (a runner inside `polymodal serve`), `auto` = celery when redis_url "
        "is set. The job row in the database is the source of truth either way.",
    )
    ingest_concurrency: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Documents the in-process runner ingests at once (embedding is CPU-bound "
        "on the embedded profile, so more rarely helps there).",
    )
    ingest_job_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="A running ingestion job whose heartbeat is older than this is taken "
        "over (its worker died); it must exceed the time one embedding batch takes.",
    )
    ingest_visibility_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="Celery on Redis: a task not acknowledged this long after delivery "
        "(its worker died) is delivered again. Must exceed the longest ingestion.",
    )
    ingest_max_attempts: int = Field(
        default=3, ge=1, description="Attempts of one ingestion job before it is failed."
    )
    ingest_max_document_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest document file (upload or URL body) accepted; larger get 413. "
        "An upload is also bounded by max_body_bytes.",
    )
    ingest_max_text_chars: int = Field(
        default=2_000_000,
        ge=1000,
        description="Largest extracted text of one document (a zip-bomb docx or a huge "
        "csv is refused with 413, not indexed in part).",
    )
    fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="Whole-download deadline when ingesting from a URL."
    )
    fetch_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect deadline per hop when ingesting from a URL."
    )
    fetch_max_redirects: int = Field(
        default=5, ge=0, le=20, description="Redirects followed (each re-checked) per URL."
    )
    fetch_allow_networks: list[str] = Field(
        default_factory=list,
        description="TEST ONLY: address networks (CIDR) URL ingestion may reach although "
        "the SSRF guard would refuse them (e.g. `127.0.0.1/32` for a loopback test server). "
        "Refused in production.",
    )
    chunk_tokens: int = Field(
        default=512,
        ge=32,
        le=8192,
        description="Chunk size in tokens of the knowledge base's embedding model (capped "
        "at what the model embeds in one pass: 507 for multilingual-e5-small).",
    )
    chunk_overlap_tokens: int = Field(
        default=50, ge=0, description="Tokens each chunk repeats from the end of the previous one."
    )
    embedding_cache_ttl_s: float = Field(
        default=48 * 3600.0,
        gt=0,
        description="Lifetime of a cached chunk/query embedding (Redis, or in-process).",
    )
    embedding_cache_entries: int = Field(
        default=20_000,
        ge=1,
        description="Embeddings the in-process cache keeps (embedded profile; ~1.5 KB each "
        "at 384 dimensions).",
    )
    embedding_batch_size: int = Field(
        default=32, ge=1, le=2048, description="Texts per embedding call when ingesting."
    )
    bm25_k1: float = Field(default=1.2, gt=0, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(default=0.75, ge=0, le=1, description="BM25 length normalisation.")
    bm25_avg_chunk_tokens: float = Field(
        default=256.0,
        gt=0,
        description="Average chunk length (words) BM25 normalises against; the IDF part "
        "comes from Qdrant (modifier=IDF).",
    )
    # Chosen on SciFact's train queries (809; bench/rag_scifact.py --tune-on-train), then
    # measured on its test queries: hybrid nDCG@10 0.704-0.706 against 0.695 with the
    # textbook k=60 and 50 candidates. A small k lets one arm's top ranks decide.
    search_candidates: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Candidates each arm (dense, BM25) returns before rank fusion.",
    )
    rrf_k: int = Field(
        default=10, ge=1, description="Reciprocal rank fusion constant: score = sum 1/(k + rank)."
    )

    # --- chatbots and the semantic query cache (RAG) --------------------------------------
    semantic_cache_enabled: bool = Field(
        default=True,
        description="Reuse a retrieval for a near-identical query (same tenant, KBs, KB "
        "versions and top_k).",
    )
    semantic_cache_threshold: float = Field(
        default=0.92,
        gt=0,
        le=1,
        description="Cosine between two queries' embeddings at or above which the later "
        "query reuses the earlier one's retrieval (numbers, negations and named entities "
        "must also match; see bench/rag_semantic_cache_eval.py).",
    )
    semantic_cache_embedding_model: str = Field(
        default="local-e5-small",
        description="Deployment that embeds queries for the semantic cache (`query:` prefix).",
    )
    semantic_cache_max_entries: int = Field(
        default=2000,
        ge=1,
        description="Recent queries kept per (tenant, KBs, versions, top_k); a lookup is "
        "one brute-force cosine over them.",
    )
    semantic_cache_ttl_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="A scope's cached queries expire this long after its last new entry.",
    )
    chatbot_top_k: int = Field(
        default=5, ge=1, le=50, description="Sources a new chatbot retrieves by default."
    )
    chatbot_relevance_threshold: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Default for new chatbots: a hit whose dense cosine is below this does "
        "not count; with none left the answer is the localized 'not in the knowledge base' "
        "text, without a model call.",
    )
    chatbot_history_messages: int = Field(
        default=6,
        ge=0,
        le=100,
        description="Messages kept verbatim once a conversation's history is summarised.",
    )
    chatbot_summary_trigger_tokens: int = Field(
        default=1500,
        ge=100,
        description="Unsummarised history above this many tokens is folded into the "
        "conversation's summary (a call on chatbot_summary_tier) before the next answer.",
    )
    chatbot_summary_tier: Literal["simple", "complex", "critical"] = Field(
        default="simple", description="Tier of the call that writes conversation summaries."
    )
    chatbot_max_message_chars: int = Field(
        default=8000, ge=1, description="Longest user message a chatbot accepts."
    )

    # --- models -------------------------------------------------------------------------
    deployments: list[DeploymentSpec] = Field(
        default_factory=list,
        description="Model deployments (YAML). Merged by `id` over the shipped catalog "
        "(src/polymodal/catalog.yaml); `enabled: false` hides a shipped one.",
    )
    shipped_catalog: bool = Field(
        default=True,
        description="Start from the shipped catalog of public and local models.",
    )
    default_model: str = Field(
        default="local-smollm2",
        description='Deployment used for `model: "auto"` (until the router decides).',
    )
    default_embedding_model: str = Field(
        default="local-e5-small",
        description="Deployment used for embeddings when a request names none.",
    )
    routes: RoutesSpec = Field(
        default_factory=RoutesSpec,
        description="Candidate deployments per tier (and per task), in preference order (YAML).",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Upstream attempts one request may make in all."
    )
    retry_budget_ratio: float = Field(
        default=0.2,
        ge=0,
        description="Retries allowed per request on average across all requests, so an "
        "outage does not become a retry storm.",
    )
    retry_budget_floor_per_s: float = Field(
        default=5.0, ge=0, description="Retries always allowed per second, at low traffic."
    )
    breaker_consecutive_failures: int = Field(
        default=3, ge=1, description="Consecutive failures that open a deployment's breaker."
    )
    breaker_failure_rate: float = Field(
        default=0.5, gt=0, le=1, description="Failure rate over the window that opens it."
    )
    breaker_window_s: float = Field(
        default=30.0, gt=0, description="Window for the breaker's failure rate."
    )
    breaker_min_calls: int = Field(
        default=10, ge=1, description="Calls in the window before the rate counts."
    )
    breaker_open_s: float = Field(
        default=10.0,
        gt=0,
        description="First open period; doubles on each reopening, up to breaker_max_open_s.",
    )
    breaker_max_open_s: float = Field(default=120.0, gt=0, description="Longest open period.")
    first_byte_floor_s: float = Field(
        default=0.25,
        gt=0,
        description="Adaptive first-byte deadline: never below this.",
    )
    first_byte_multiplier: float = Field(
        default=4.0,
        gt=1,
        description="Adaptive first-byte deadline: this many times the deployment's recent "
        "healthy p95 first-byte time.",
    )
    upstream_always_stream: bool = Field(
        default=True,
        description="Call providers in streaming mode even for non-streaming requests, so "
        "a hung provider is caught at its first-byte deadline, not the whole-answer timeout.",
    )
    stream_idle_floor_s: float = Field(
        default=0.25,
        gt=0,
        description="Adaptive stream idle deadline: never below this.",
    )
    stream_idle_multiplier: float = Field(
        default=8.0,
        gt=1,
        description="Adaptive stream idle deadline: this many times the deployment's recent "
        "p99 gap between chunks (upstream_idle_timeout_s until 20 gaps are known).",
    )
    stream_continuation: bool = Field(
        default=True,
        description="A stream that breaks after sending text continues on the next "
        "candidate (false: it ends with an error event). Tenants may turn it off.",
    )
    local_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="CPU threads per local model. Two heavy threads on a 2-core machine "
        "collapse throughput; raise it on bigger machines.",
    )
    local_max_concurrency: int = Field(
        default=1,
        ge=1,
        description="Local model calls run at once per process; others wait their turn.",
    )
    local_context_size: int = Field(
        default=4096, ge=256, description="Context window the local chat model is loaded with."
    )
    upstream_connect_timeout_s: float = Field(
        default=2.0, gt=0, description="Connect timeout for one upstream attempt."
    )
    upstream_first_byte_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Time to first byte (headers, then first stream chunk) of one attempt.",
    )
    upstream_idle_timeout_s: float = Field(
        default=15.0, gt=0, description="Longest silence allowed between stream chunks."
    )
    upstream_total_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest a non-streaming upstream call may take."
    )
    upstream_max_connections: int = Field(
        default=512,
        ge=1,
        description="Connections the process's pooled HTTP client keeps open in all.",
    )
    usage_flush_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="Usage rows are written in batches at least this often (off the "
        "response path).",
    )
    usage_batch_size: int = Field(
        default=500, ge=1, description="Largest batch of usage rows per database write."
    )
    usage_spool_dir: Path | None = Field(
        default=None,
        description="Crash spool of the usage ledger: every row is appended here before "
        "it counts as queued and replayed at start-up if the process died before writing "
        "it to the database. Unset uses `<data_dir>/usage-spool`; give each replica its "
        "own persistent folder.",
    )
    usage_spool_max_bytes: int = Field(
        default=1024**3,
        ge=1024 * 1024,
        description="Most bytes the usage spool may hold while the database is down; rows "
        "beyond it stay in memory only (counted in polymodal_usage_spool_errors_total).",
    )
    usage_max_pending: int = Field(
        default=100_000,
        ge=1,
        description="Most usage rows held in memory awaiting a write; rows beyond it are "
        "dropped and counted (polymodal_usage_rows_dropped_total{reason=queue_full}).",
    )

    # --- rate limits and budgets ----------------------------------------------------------
    rate_limits_enabled: bool = Field(
        default=True,
        description="Enforce requests- and tokens-per-minute limits (false: only budgets "
        "apply, e.g. for load benchmarks).",
    )
    plan_limits: dict[str, PlanLimitsSpec] = Field(
        default_factory=_default_plan_limits,
        description="Rate limits per plan (YAML): free 60 rpm / 200k tpm, pro 600 rpm / 2M "
        "tpm, enterprise 6000 rpm / 20M tpm. A tenant's plan must be one of these names.",
    )
    estimate_output_tokens: int = Field(
        default=1024,
        ge=1,
        description="Output tokens assumed for a chat request without max_tokens, in the "
        "tokens-per-minute check and the budget reservation. A longer answer can overspend a "
        "hard budget by its excess; clients that set max_tokens are bounded exactly.",
    )
    budget_reservation_ttl_s: float = Field(
        default=900.0,
        gt=0,
        description="A budget reservation whose call never settled (its process died) stops "
        "counting after this long; must exceed the longest call.",
    )
    budget_alert_thresholds: list[float] = Field(
        default_factory=lambda: [0.8, 1.0],
        description="Fractions of a budget at which an alert is recorded once per month "
        "(metric, log line and stored flag), unless the budget sets its own.",
    )
    limits_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a tenant's plan, limit overrides and budgets are cached per "
        "process; a change made on another replica applies within this bound.",
    )

    # --- authentication -----------------------------------------------------------------
    auth_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a resolved API key is cached per process. A revoked key "
        "stops working within this bound.",
    )
    jwt_issuer: str = Field(
        default="polymodal",
        min_length=1,
        description="`iss` of the access tokens polymodal signs (and requires back).",
    )
    jwt_audience: str = Field(
        default="polymodal-api",
        min_length=1,
        description="`aud` of the access tokens polymodal signs (and requires back).",
    )
    jwt_algorithm: Literal["EdDSA", "RS256"] = Field(
        default="EdDSA",
        description="Signing algorithm of new keys (Ed25519 verifies in ~50 us).",
    )
    jwt_access_ttl_s: int = Field(
        default=900,
        ge=30,
        le=86_400,
        description="Lifetime of an access token (short: a stolen one soon expires).",
    )
    jwt_refresh_ttl_s: int = Field(
        default=30 * 86_400,
        ge=60,
        description="Lifetime of a refresh token; each use rotates it for a fresh one.",
    )
    jwt_rotation_s: int = Field(
        default=30 * 86_400,
        ge=60,
        description="A signing key older than this is rotated out at start-up (or by "
        "`polymodal admin jwt rotate` at any time).",
    )
    jwt_leeway_s: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew allowed on `exp`/`nbf`/`iat`."
    )
    jwt_unknown_kid_reload_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="A token naming an unknown signing key (another replica's new one) "
        "reloads the key ring at most this often, so made-up kids cannot flood the database.",
    )
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins allowed per email and client address per window "
        "before further attempts get 429.",
    )
    login_failure_window_s: float = Field(
        default=900.0, gt=0, description="Window of `login_max_failures`."
    )
    invitation_ttl_s: int = Field(
        default=7 * 86_400, ge=60, description="How long a member invitation can be accepted."
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="An external OpenID Connect issuer whose access tokens are accepted "
        "(its `iss`); unset accepts only polymodal's own tokens.",
    )
    oidc_jwks_url: str | None = Field(
        default=None,
        description="JWKS of the external issuer; unset uses "
        "`<oidc_issuer>/.well-known/jwks.json`.",
    )
    oidc_audience: str | None = Field(
        default=None, description="`aud` required in the external issuer's tokens."
    )
    oidc_tenant_claim: str = Field(
        default="tenant", description="Claim of an external token naming the tenant (id or name)."
    )
    oidc_role_claim: str = Field(
        default="role", description="Claim of an external token naming the role."
    )
    oidc_default_role: Literal["admin", "developer", "member", "viewer"] = Field(
        default="member",
        description="Role of an external token without a role claim. External tokens are "
        "never owners: a role claim of `owner` maps to `admin`.",
    )
    oidc_jwks_ttl_s: float = Field(
        default=300.0, gt=0, description="How long the external issuer's JWKS is cached."
    )

    # --- health -------------------------------------------------------------------------
    readiness_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Each `/readyz` dependency check fails after this long.",
    )

    # --- logging ------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Minimum log level."
    )
    log_json: bool = Field(
        default=True,
        description="JSON log lines (true) or human-readable console lines (false).",
    )
    access_log: bool = Field(
        default=True,
        description="One log line per request (method, route, status, duration; never "
        "bodies or keys).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in _DATABASE_SCHEMES or not rest:
            raise ValueError(f"must start with one of {', '.join(_DATABASE_SCHEMES)}://")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in _REDIS_SCHEMES or not rest:
            raise ValueError(f"must start with one of {', '.join(_REDIS_SCHEMES)}://")
        return v

    @field_validator("qdrant_url")
    @classmethod
    def _qdrant_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://")) or len(v) < 10:
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("plan_limits")
    @classmethod
    def _plan_limits(cls, v: dict[str, PlanLimitsSpec]) -> dict[str, PlanLimitsSpec]:
        missing = [p for p in ("free", "pro", "enterprise") if p not in v]
        if missing:
            raise ValueError(
                f"plan '{missing[0]}' is missing (tenants are on free, pro or enterprise)"
            )
        return v

    @field_validator("budget_alert_thresholds")
    @classmethod
    def _alert_thresholds(cls, v: list[float]) -> list[float]:
        for t in v:  # whole percents from 1 % to 200 %: the alert metric's label stays bounded
            if not 0.01 <= t <= 2 or round(t * 100) != t * 100:
                raise ValueError(f"{t} is not a whole percent between 0.01 and 2")
        return sorted(set(v))

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, v: str) -> str:
        if not v.startswith(("file://", "s3://")) or len(v) < 8:
            raise ValueError("must be a file:// or s3:// URL")
        return v

    @model_validator(mode="after")
    def _no_placeholder_secrets_outside_development(self) -> Settings:
        if self.environment != "development":
            secret = self.secret_key.get_secret_value()
            if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
                raise ValueError(
                    "secret_key is a placeholder or shorter than 32 characters; set "
                    "POLYMODAL_SECRET_KEY to a real secret outside development"
                )
        return self

    @model_validator(mode="after")
    def _no_fetch_allowlist_in_production(self) -> Settings:
        if self.environment == "production" and self.fetch_allow_networks:
            raise ValueError("fetch_allow_networks is for tests only; unset it in production")
        return self

    # --- derived --------------------------------------------------------------------------

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded_index_path(self) -> Path:
        """The embedded index's folder (when qdrant_url is unset)."""
        name = "qdrant-edge" if self.qdrant_embedded_engine == "edge" else "qdrant"
        return self.qdrant_path or self.data_dir / name

    @property
    def celery_ingest(self) -> bool:
        """``auto``: Celery when there is a broker (Redis) and an index every worker can
        reach (a Qdrant server); an embedded index is one process's folder, so its jobs
        run inside ``polymodal serve``."""
        if self.ingest_queue == "auto":
            return self.redis_url is not None and self.qdrant_url is not None
        return self.ingest_queue == "celery"

    def profile(self) -> dict[str, str]:
        """What each concern runs on, for `polymodal doctor` and the start-up log."""
        return {
            "database": "sqlite" if self.is_sqlite else "postgresql",
            "cache": "redis" if self.redis_url else "in-process",
            "jobs": "celery" if self.celery_ingest else "in-process",
            "vectors": f"qdrant-{self.qdrant_embedded_engine}"
            if self.qdrant_url is None
            else "qdrant-server",
            "objects": self.storage_url.partition("://")[0],
        }


class _YamlSource(PydanticBaseSettingsSource):
    """Top-level keys of the YAML config file; structured sections join in later issues."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._data = _read_yaml(_config_path())

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        if CONFIG_ENV in os.environ:
            raise SettingsError(f"{CONFIG_ENV}: config file {path} does not exist")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"{CONFIG_ENV}: {path} is not valid YAML{where}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{CONFIG_ENV}: {path} must be a mapping of setting names")
    return data


def _unknown_env_settings(environ: dict[str, str]) -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(
        key
        for key in environ
        if key.startswith(ENV_PREFIX) and key not in known and not key.startswith(_NON_SETTING_ENV)
    )


def _describe(error: Any, file_keys: set[str]) -> str:
    loc = error.get("loc") or ("?",)
    name = str(loc[0])
    where = f"{name} in {_config_path()}" if name in file_keys else ENV_PREFIX + name.upper()
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown setting"
    return f"invalid setting {where}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; any problem becomes one `SettingsError` line."""
    unknown = _unknown_env_settings(dict(os.environ))
    if unknown:
        raise SettingsError(f"invalid setting {unknown[0]}: unknown setting")
    try:
        return Settings(**overrides)
    except ValidationError as e:
        file_keys = set(_read_yaml(_config_path()))
        raise SettingsError(_describe(e.errors()[0], file_keys)) from None


def settings_markdown() -> str:
    """The README's configuration reference, generated from the fields above."""
    lines = [
        "| environment variable | default | description |",
        "| --- | --- | --- |",
    ]
    for name, info in Settings.model_fields.items():
        default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
        if isinstance(default, SecretStr):
            shown = "`change-me` (development only)"
        elif default is None:
            shown = "unset"
        else:
            shown = f"`{default}`"
        description = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"
