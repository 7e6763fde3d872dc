"""The `web:` config section."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WebConfig(BaseModel):
    """Where the status page and the API listen and who may change things through them."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve the status page and the API.")
    host: str = Field("127.0.0.1", description="Bind address; loopback unless set (the station's own browser).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one (logged).")
    token_env: str = Field(
        "EDGE_INSPECT_API_TOKEN",
        description="Environment variable holding the bearer token every write endpoint needs "
        "(unset: the API is read-only).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the pages answer to (DNS-rebinding guard); empty: the loopback names when "
        "bound to loopback, else any.",
    )
    max_body_bytes: int = Field(65536, ge=256, le=10_485_760, description="Largest request body accepted.")
    sse_interval_s: float = Field(1.0, ge=0.1, le=30, description="How often the live page is updated.")
    window_s: float = Field(60.0, ge=5, le=3600, description="Window of the live counts, rates and latencies.")
    recent: int = Field(24, ge=1, le=500, description="Last verdicts shown live on the status page.")

    def trusted_hosts(self) -> list[str]:
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        if self.host in ("127.0.0.1", "localhost", "::1"):
            return ["127.0.0.1", "localhost", "::1", "[::1]"]
        return ["*"]

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v
