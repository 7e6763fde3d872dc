"""The operator surface: status page, reject gallery, JSON API, /metrics, health probes.

A FastAPI app served by uvicorn on the service's I/O loop, reading only a small read model
(`LiveFeed`: a verdict subscriber and cached snapshots), the audit store and the evidence
files; writes go through `ServiceContext.control` and need the API token.
"""
