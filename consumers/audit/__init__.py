"""Audit: replay and time travel, tamper evidence (RFC 6962 + Ed25519), disclosure accounting.

Pure modules (no I/O beyond their arguments): :mod:`merkle`, :mod:`digest` (row digests),
:mod:`bundle` verification logic, :mod:`checkpoints` signing. Thin adapters read Kafka and SQL:
:mod:`replay`, :mod:`disclosures`, the export/checkpoint halves of :mod:`bundle` and
:mod:`checkpoints`.
"""
