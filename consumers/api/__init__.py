"""The partner gateway and the staff query API (FastAPI), built by :func:`create_api`.

The API never evaluates policy: the gateway hands events to the partner's inbound topic (the
validator decides from there) and the staff endpoints read only the caller's own view rows.
"""
