"""Audit: replay and time travel, tamper evidence (RFC 6962 + Ed25519), disclosure accounting.

Pure modules (no I/O beyond their arguments): :mod:`merkle`, :mod:`digest` (row digests),
bundle verification (:mod:`bundle_verify`, the seal check of :mod:`bundle_seal`),
:mod:`checkpoints` signing. Thin adapters read Kafka, SQL and files: :mod:`replay`,
:mod:`disclosures`, bundle export and reading (:mod:`bundle_export`, :mod:`bundle_read`;
:mod:`bundle` is the bundles' public entry), the checkpoint half of :mod:`checkpoints`.
"""
