"""Audit bundles, the public entry: export a window of ``lead.events`` with what verifies it
(:func:`export_bundle`); verify a bundle offline (:func:`read_bundle_and_verify`, or
:func:`verify_bundle` on parsed content), which reports every :class:`Failure` it finds, each
naming its record, checkpoint, file or manifest field, in a :class:`Report`.

The format (layout, seal, leaves, soundness, older formats) is specified in
:mod:`consumers.audit.bundle_format`, whose doc every bundle carries as README.txt. The work is
split by concern:

- :mod:`consumers.audit.bundle_format`: the format's names and constants, the writers of
  manifest.json and of a line of events.jsonl, README.txt
- :mod:`consumers.audit.bundle_report`: :class:`Failure` and :class:`Report`
- :mod:`consumers.audit.bundle_verify`: the records and checkpoints (pure)
- :mod:`consumers.audit.bundle_seal`: seal.json over every file and manifest field (write,
  verify), the inventory of a bundle directory
- :mod:`consumers.audit.bundle_read`: read a bundle directory and verify it (file adapter)
- :mod:`consumers.audit.bundle_export`: export from Kafka, write and seal (Kafka adapter)
"""

from __future__ import annotations

from consumers.audit.bundle_export import export_bundle
from consumers.audit.bundle_read import read_bundle_and_verify
from consumers.audit.bundle_report import Failure, Report
from consumers.audit.bundle_verify import verify_bundle

__all__ = ["Failure", "Report", "export_bundle", "read_bundle_and_verify", "verify_bundle"]
