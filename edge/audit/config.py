"""The `audit:` config section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AuditConfig(BaseModel):
    """Where the audit trail lives and how long it is kept."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Keep the audit trail (every verdict and every API change).")
    path: str | None = Field(
        None,
        description="SQLite database file (relative to the config file's folder); default: <state_dir>/audit.sqlite.",
    )
    retention_days: float = Field(
        365.0, gt=0, description="Verdict rows older than this are deleted (API changes are kept)."
    )
    max_rows: int | None = Field(
        None, ge=1000, description="At most this many verdict rows (oldest deleted first); null: no limit."
    )
    queue_size: int = Field(
        65536, ge=16, description="Verdicts waiting for the audit writer; overflow is dropped and counted."
    )
    batch_size: int = Field(512, ge=1, le=10000, description="Most verdict rows written per transaction.")

    def resolve_path(self, base_dir: Path, state_dir: Path | None = None) -> Path:
        if self.path is None:
            return (state_dir if state_dir is not None else Path(base_dir) / "state") / "audit.sqlite"
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else Path(base_dir) / p
