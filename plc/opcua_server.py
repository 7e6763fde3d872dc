"""Sink type ``opcua-server``: the station's OPC UA server (Machine Vision model, see
`plc.machine_vision.server`), with its security: Basic256Sha256 Sign / SignAndEncrypt, the
application certificate (created on first start unless told not to, or by `edge-inspect certs`),
a trust-list folder for client certificates, users with roles, no anonymous writes or calls, and
an unsecured endpoint only when the config asks for it.

`submit()` hands the verdict to the I/O loop (never blocks); the server publishes it there. A
full hand-off is counted as dropped; the PLC sees the gap in `Sequence`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from asyncua import Server, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.internal_session import ServiceError
from pydantic import Field

from edge.errors import SinkError
from edge.ioloop import IoLoop
from edge.sinks.base import SinkConfigBase
from edge.verdict import Verdict
from plc.certs import write_application_certificate
from plc.machine_vision.server import Control, VisionServer
from plc.opcua_security import StationRuleset, StationUserManager, UserConfig

if TYPE_CHECKING:
    from edge.control import ServiceContext
    from plc.opcua_process import OpcUaServerProcess

log = logging.getLogger(__name__)

_POLICIES = {
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


class OpcUaServerSinkConfig(SinkConfigBase):
    type: Literal["opcua-server"] = "opcua-server"
    host: str = Field("127.0.0.1", description="Address to listen on (loopback unless configured).")
    port: int = Field(4840, ge=0, le=65535)
    path: str = Field("edge-inspect", description="Endpoint path: opc.tcp://host:port/<path>")
    station: str = Field("station1", description="Station name (server name, event source).")
    application_uri: str = Field("urn:edge-inspect:station", description="Must match the certificate's URI.")
    certificate: str = Field("pki/server_cert.der", description="Application certificate (DER or PEM).")
    private_key: str = Field("pki/server_key.pem", description="Its private key (PEM).")
    create_certificate: bool = Field(True, description="Create a self-signed certificate when none exists.")
    trusted_dir: str = Field("pki/trusted", description="Folder of trusted client (or CA) certificates.")
    security: list[Literal["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]] = Field(
        default_factory=lambda: ["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]  # type: ignore[arg-type]
    )
    allow_unsecured: bool = Field(False, description="Also offer the None security policy (labs, loopback).")
    allow_anonymous: bool = Field(False, description="Anonymous sessions (read-only) allowed.")
    users: list[UserConfig] = Field(default_factory=list)
    heartbeat_s: float = Field(1.0, gt=0, description="Heartbeat period; it stops when the service is not ready.")
    max_heartbeat_age_s: float = Field(2.0, gt=0, description="Pipeline worker heartbeat age that makes Ready false.")
    result_store_size: int = Field(
        1000, ge=0, le=100_000, description="Most recent results ResultManagement.GetResultById can find (0: none)."
    )
    process: bool = Field(
        False,
        description="Run the server in a process of its own (plc.opcua_process): asyncua's per-verdict Python "
        "then does not hold the service's GIL, so the MQTT path and the inference worker do not wait behind it "
        "(benchmarks/bridge_isolation.py); costs a hand-off between processes per verdict.",
    )

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/{self.path}"

    def build(self, base_dir: Path) -> OpcUaServerSink | OpcUaServerProcess:
        def resolve(p: str) -> Path:
            path = Path(p).expanduser()
            return path if path.is_absolute() else base_dir / path

        kind: type[OpcUaServerSink] | type[OpcUaServerProcess] = OpcUaServerSink
        if self.process:
            from plc.opcua_process import OpcUaServerProcess

            kind = OpcUaServerProcess
        return kind(
            self.name or "opcua-server",
            self,
            resolve(self.certificate),
            resolve(self.private_key),
            resolve(self.trusted_dir),
        )


def workers_ready(ctx: ServiceContext | None, max_age_s: float) -> bool:
    """The service's inference worker and watchdog beat recently (True outside a service)."""
    if ctx is None:
        return True
    try:
        workers = ctx.workers()
    except Exception:
        return False
    ages = [workers.get("inference_heartbeat_age_s"), workers.get("watchdog_heartbeat_age_s")]
    return all(a is not None and float(a) <= max_age_s for a in ages)  # None: not running


class OpcUaServerSink:
    def __init__(self, name: str, cfg: OpcUaServerSinkConfig, cert: Path, key: Path, trusted: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.cert_path, self.key_path, self.trusted_dir = cert, key, trusted
        self.ctx: ServiceContext | None = None
        self.control: Control | None = None
        self._own_loop: IoLoop | None = None
        self.ioloop: IoLoop | None = None
        self._lock = threading.Lock()
        self._inflight = 0
        self._queue: asyncio.Queue[Verdict | dict[str, Any]] | None = None
        self.submitted = self.written = self.dropped = self.errors = 0
        self.last_error: str | None = None
        self.untrusted = 0
        self.users = StationUserManager(cfg.users, cfg.allow_anonymous)
        self.ruleset = StationRuleset()
        self.vision: VisionServer | None = None
        self._consumer: Any = None
        self._probe_override: Callable[[], bool] | None = None

    @property
    def endpoint(self) -> str:
        return self.cfg.endpoint

    # -- wiring ---------------------------------------------------------------------------------------
    def bind(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.ioloop = ctx.ioloop
        self.control = ctx.control

    def use(
        self, ioloop: IoLoop, control: Control | None = None, ready_probe: Callable[[], bool] | None = None
    ) -> None:
        """Run on this loop with this control (tests, tools, the server's own process): what `bind`
        does for the service; `ready_probe` replaces the service's health check."""
        self.ioloop = ioloop
        self.control = control
        self._probe_override = ready_probe

    def _ready_probe(self) -> bool:
        """Cheap health of the service for Ready (runs at every heartbeat, on the I/O loop)."""
        if self._inflight > self.cfg.queue_size // 2:  # the server cannot keep up: say so
            return False
        if self._probe_override is not None:
            return self._probe_override()
        return workers_ready(self.ctx, self.cfg.max_heartbeat_age_s)

    async def _configure(self, server: Server) -> None:
        cfg = self.cfg
        if not self.key_path.exists():
            if not cfg.create_certificate:
                raise SinkError(f"opcua server: no private key at {self.key_path} (run 'edge-inspect certs')")
            folder = self.key_path.parent
            paths = write_application_certificate(folder, cfg.application_uri)
            if self.cert_path.suffix.lower() == ".pem":
                self.cert_path = paths["cert_pem"]
            else:
                self.cert_path = paths["cert_der"]
            log.info("opcua: created the application certificate %s", self.cert_path)
        self.trusted_dir.mkdir(parents=True, exist_ok=True)
        await server.load_certificate(str(self.cert_path))
        await server.load_private_key(str(self.key_path))
        policies = [_POLICIES[p] for p in cfg.security]
        if cfg.allow_unsecured:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        if not policies:
            raise SinkError("opcua server: no security policy left (give security: or allow_unsecured: true)")
        server.set_security_policy(policies, permission_ruleset=self.ruleset)  # type: ignore[arg-type]
        tokens: list[type] = [ua.UserNameIdentityToken]
        if cfg.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        server.set_certificate_validator(self._validate_client)

    async def _validate_client(self, cert: Any, app: ua.ApplicationDescription) -> None:
        """Check a client's certificate against the trust-list folder, re-read at every connection
        (a certificate dropped into the folder is trusted without a restart; an empty folder trusts none)."""
        has_any = any(p.suffix.lower() in (".der", ".pem", ".crt", ".cer") for p in self.trusted_dir.glob("*"))
        if not has_any:
            self.untrusted += 1
            log.warning("opcua: client %s refused: the trust list %s is empty", app.ApplicationUri, self.trusted_dir)
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        store = TrustStore([self.trusted_dir], [])
        await store.load()
        options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        try:
            await CertificateValidator(options, store).validate(cert, app)
        except ServiceError:
            self.untrusted += 1
            log.warning("opcua: client certificate of %s refused", app.ApplicationUri)
            raise

    # -- Sink protocol ----------------------------------------------------------------------------------
    def start(self) -> None:
        quiet = logging.getLogger("asyncua")
        if quiet.level == logging.NOTSET:  # asyncua logs every type it registers at INFO
            quiet.setLevel(logging.WARNING)
        if self.ioloop is None:
            self._own_loop = IoLoop(f"opcua-{self.name}")
            self._own_loop.start()
            self.ioloop = self._own_loop
        self.vision = VisionServer(
            endpoint=self.endpoint,
            application_uri=self.cfg.application_uri,
            station=self.cfg.station,
            configure=self._configure,
            control=self.control,
            ready_probe=self._ready_probe,
            heartbeat_s=self.cfg.heartbeat_s,
            user_manager=self.users,
            result_store_size=self.cfg.result_store_size,
        )
        try:
            self.ioloop.run_sync(self._start(), timeout=120)
        except Exception as exc:
            raise SinkError(f"opcua server {self.endpoint}: cannot start ({exc})") from exc

    async def _start(self) -> None:
        assert self.vision is not None
        await self.vision.start()
        self.ruleset.operator_methods.update(self.vision.operator_methods)
        self.ruleset.read_methods.update(self.vision.read_methods)
        self._queue = asyncio.Queue()
        self._consumer = asyncio.create_task(self._consume(), name=f"opcua-{self.name}")

    async def _consume(self) -> None:
        assert self._queue is not None and self.vision is not None
        while True:
            item = await self._queue.get()
            record = item if isinstance(item, dict) else item.to_dict()
            try:
                await self.vision.publish(record)
                self.written += 1
            except Exception as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.exception("opcua server: publishing %s failed", record.get("result_id"))
            finally:
                with self._lock:
                    self._inflight -= 1

    def _put(self, item: Verdict | dict[str, Any]) -> None:
        if self._queue is None:
            with self._lock:
                self._inflight -= 1
                self.dropped += 1
            return
        self._queue.put_nowait(item)

    def submit(self, verdict: Verdict) -> bool:
        return self.submit_record(verdict)

    def submit_record(self, item: Verdict | dict[str, Any]) -> bool:
        """A verdict, or its record (`Verdict.to_dict()`, as the server's own process receives it)."""
        loop = self.ioloop
        with self._lock:
            if loop is None or self._inflight >= self.cfg.queue_size:
                self.dropped += 1
                return False
            self._inflight += 1
            self.submitted += 1
        loop.call_soon(self._put, item)
        return True

    def close(self, timeout: float = 5.0) -> None:
        loop = self.ioloop
        if loop is not None and self.vision is not None:
            end = time.monotonic() + timeout
            while self._inflight > 0 and time.monotonic() < end:
                time.sleep(0.01)
            try:
                loop.run_sync(self._stop(), timeout=timeout)
            except Exception:
                log.exception("opcua server: stop failed")
        if self._own_loop is not None:
            self._own_loop.stop(timeout)
            self._own_loop = None
            self.ioloop = None
        self.vision = None

    async def _stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except (asyncio.CancelledError, Exception):
                pass
        if self.vision is not None:
            await asyncio.sleep(0.3)  # a few publishing intervals: subscribers get the last notifications
            await self.vision.stop()

    def health(self) -> dict[str, Any]:
        v = self.vision
        return {
            "name": self.name,
            "kind": "best_effort",
            "submitted": self.submitted,
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors + (v.stats.errors if v else 0),
            "backlog": max(0, self._inflight),
            "live": bool(v is not None and v.server is not None),
            "last_error": self.last_error or (v.stats.last_error if v else None),
            "events": v.stats.events if v else 0,
            "sequence": v.counters.sequence if v else 0,
            "ready": bool(v.last_ready) if v and v.server is not None else False,
            "logins_refused": self.users.refused,
            "requests_denied": self.ruleset.denied,
            "certificates_refused": self.untrusted,
        }
