"""The audit trail: every verdict and every change made through the API, in one SQLite (WAL) file.

`AuditStore` owns the database (schema, writes, paged queries, CSV export, retention);
`AuditSink` feeds it from the pipeline as a sink; `AuditConfig` is the `audit:` section.
"""

from edge.audit.config import AuditConfig
from edge.audit.store import AuditStore, VerdictQuery

__all__ = ["AuditConfig", "AuditStore", "VerdictQuery"]
