"""All server settings in one typed object.

Precedence, highest first: explicit overrides (command-line flags), `ECHOGATE_*`
environment variables (nested with `__`, e.g. `ECHOGATE_LIMITS__MAX_BATCH=512`), the YAML
file named by `--config` or `ECHOGATE_CONFIG`, then the defaults below, which run the
service on the shipped model and an embedded store with no other setup.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource


def default_model_path() -> str:
    return str(resources.files("echogate") / "models" / "bot_origin.onnx")


class Limits(BaseModel):
    """Request limits; anything beyond them is INVALID_ARGUMENT, reported by GetServerInfo."""

    max_batch: int = Field(1024, ge=1)
    max_turns: int = Field(500, ge=1)
    max_turn_bytes: int = Field(16_384, ge=1)
    max_id_bytes: int = Field(256, ge=1)
    max_metadata_entries: int = Field(64, ge=0)
    max_metadata_bytes: int = Field(4096, ge=1)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class BatchingSettings(BaseModel):
    """Micro-batching of concurrent requests into one model call.

    `inference_threads` model calls run at once (default: one per core), each using
    `intra_op_threads` onnxruntime threads. Whole batches in parallel beat splitting one
    small batch's ops across cores, and leave the event loop a core under load.
    """

    max_batch_transcripts: int = Field(512, ge=1)
    max_queue_transcripts: int = Field(20_000, ge=1)
    inference_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    intra_op_threads: int = Field(1, ge=1)


class StoreSettings(BaseModel):
    """Where verdicts are recorded. `url` is a file path (embedded SQLite) or `sqlite:PATH`."""

    url: str = "echogate.db"
    max_group: int = Field(4096, ge=1)


class CorpusSettings(BaseModel):
    """The corpus memory (turns seen in earlier transcripts, see echogate.corpus)."""

    capacity: int = Field(500_000, ge=1)  # distinct turns held before all counts are halved
    flush_seconds: float = Field(30.0, gt=0)  # how often changed counts are written to the store
    diversity_window: int = Field(50_000, ge=1)  # agent-side word trigrams per source in distinct-3 (echogate.diversity)


class SyntheticBudget(BaseModel):
    """The real-data floor: per source, the expected machine-written share of ACCEPTED transcripts
    (mean bot-origin probability) over the last `window_seconds` stays at or under `max_share`."""

    model_config = ConfigDict(extra="forbid")
    max_share: float = Field(ge=0, le=1)
    window_seconds: float = Field(86_400.0, gt=0)


Action = Literal["accept", "tag", "review", "block"]


class SourcePolicy(BaseModel):
    """Per-source overrides: any threshold, the declared-origin actions, extra tags, the budget."""

    model_config = ConfigDict(extra="forbid")
    tag_bot_origin: float | None = Field(None, ge=0, le=1)
    review_bot_origin: float | None = Field(None, ge=0, le=1)
    block_bot_origin: float | None = Field(None, ge=0, le=1)
    tag_repetitiveness: float | None = Field(None, ge=0, le=1)
    block_repetitiveness: float | None = Field(None, ge=0, le=1)
    declared_bot: Literal["tag", "block"] | None = None
    declared_synthetic: Literal["tag", "block"] | None = None
    declared_human_scored_machine: Action | None = None
    tags: list[str] = []
    synthetic_budget_max_share: float | None = Field(None, ge=0, le=1)


class PolicySettings(BaseModel):
    """The decision policy (docs/policy.md): thresholds on bot origin and repetitiveness (0..1),
    what declared origins lead to, the real-data floor, and per-source overrides. Inline under
    `policy:` in the settings, or its own file (`policy_file`), which can be reloaded live."""

    model_config = ConfigDict(extra="forbid")
    version: str = "default-1"
    tag_bot_origin: float = Field(0.5, ge=0, le=1)
    review_bot_origin: float = Field(0.8, ge=0, le=1)
    block_bot_origin: float = Field(0.97, ge=0, le=1)
    tag_repetitiveness: float = Field(0.5, ge=0, le=1)
    block_repetitiveness: float = Field(0.9, ge=0, le=1)
    # a declared bot or synthetic transcript is decided by its declaration, without the model
    declared_bot: Literal["tag", "block"] = "tag"
    declared_synthetic: Literal["tag", "block"] = "tag"
    # declared human but scored at or over review_bot_origin
    declared_human_scored_machine: Action = "review"
    tags: list[str] = []  # added to every verdict
    synthetic_budget: SyntheticBudget | None = None
    # Privacy: False stores blocked transcripts without their words (texts and metadata emptied;
    # content hash, roles, scores and reasons kept) and tags them `text_not_retained`.
    retain_blocked_text: bool = True
    # Quote the machine-like wording of a flagged transcript's top turn in its reason
    # (echogate.explain). It costs the scorer about a fifth of its throughput on traffic that is
    # all flagged (docs/benchmarks.md); False keeps reasons to turn numbers and scores.
    quote_wording: bool = True
    sources: dict[str, SourcePolicy] = {}

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> "PolicySettings":
        for where, t in [("", self), *((f"sources.{name}.", self.resolve(name)) for name in self.sources)]:
            if not t.tag_bot_origin <= t.review_bot_origin <= t.block_bot_origin:
                raise ValueError(f"{where}tag_bot_origin <= review_bot_origin <= block_bot_origin must hold "
                                 f"(got {t.tag_bot_origin}, {t.review_bot_origin}, {t.block_bot_origin})")
            if not t.tag_repetitiveness <= t.block_repetitiveness:
                raise ValueError(f"{where}tag_repetitiveness <= block_repetitiveness must hold")
        return self

    def resolve(self, source: str) -> "PolicySettings":
        """This policy as it applies to `source`: its overrides on top of the defaults."""
        override = self.sources.get(source)
        if override is None:
            return self
        fields = override.model_dump(exclude_none=True, exclude={"tags", "synthetic_budget_max_share"})
        budget = self.synthetic_budget
        if budget is not None and override.synthetic_budget_max_share is not None:
            budget = budget.model_copy(update={"max_share": override.synthetic_budget_max_share})
        return self.model_copy(update={**fields, "tags": [*self.tags, *override.tags], "synthetic_budget": budget,
                                       "sources": {}})


class TLSSettings(BaseModel):
    """TLS on the gRPC port; with `client_ca_file`, mutual TLS (clients must present a
    certificate signed by that CA)."""

    model_config = ConfigDict(extra="forbid")
    cert_file: str
    key_file: str
    client_ca_file: str | None = None


class TokenSettings(BaseModel):
    """One API token, stored as the SHA-256 of the secret (`echogate token` makes both)."""

    model_config = ConfigDict(extra="forbid")
    name: str  # who: appears in the audit log
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Literal["ingest", "read", "review", "admin"]]
    sources: list[str] = []  # the sources this token may write and read; empty: all


class SecuritySettings(BaseModel):
    """Who may call what (docs/security.md). No tokens: every caller may call everything (a
    local or trusted-network deployment); with tokens, every echogate RPC needs one."""

    model_config = ConfigDict(extra="forbid")
    tls: TLSSettings | None = None
    # with TLS on, health checks are served here in plain text for probes (None: not served apart)
    health_port: int | None = Field(None, ge=0, le=65535)
    tokens: list[TokenSettings] = []
    audit_log: str | None = None  # JSONL file of admin actions, reviews and exports; None: the log only


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECHOGATE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int | None = Field(9464, ge=0, le=65535)
    model_path: str = Field(default_factory=default_model_path)
    grace_seconds: float = Field(10.0, ge=0)
    # Clients reconnect after this long, so a scaled-out Deployment rebalances connections
    # (gRPC keeps one connection per client open otherwise); calls in flight get the grace.
    max_connection_age_seconds: float = Field(300.0, gt=0)
    max_connection_age_grace_seconds: float = Field(30.0, ge=0)
    limits: Limits = Limits()
    batching: BatchingSettings = BatchingSettings()
    store: StoreSettings = StoreSettings()
    corpus: CorpusSettings = CorpusSettings()
    policy: PolicySettings = PolicySettings()
    # A policy file (YAML, the same fields as `policy`) replaces `policy` and is re-read on reload
    # (SIGHUP or the Reload RPC); errors name the file's line and field.
    policy_file: str | None = None
    security: SecuritySettings = SecuritySettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> "Settings":
        """Settings from the YAML file (argument or ECHOGATE_CONFIG), environment and overrides.

        None-valued overrides are ignored, so unset command-line flags fall through.
        """
        path = config_file or os.environ.get("ECHOGATE_CONFIG")
        target = cls
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            target = type(cls.__name__, (cls,), {"model_config": {**cls.model_config, "yaml_file": str(path)}})
        return target(**{k: v for k, v in overrides.items() if v is not None})
