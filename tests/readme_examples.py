"""The README's staff and auditor examples as runnable commands, and what counts as an answer.

``tests/leadhub/test_demo.py`` runs them, as written, against the running demo with the values of
the ``export`` line the demo prints; ``tests/leadhub/test_readme.py`` checks that an example
answering nothing (or failing) is reported, so that test cannot pass on empty answers.

Only placeholders the README documents are filled in: the variables of the demo's ``export``
line (the README names each), ``KID`` (the key id ``leadhub audit keygen`` prints, as the README
says), and the API's address ``http://127.0.0.1:8080``, which the README gives as the default
and the demo's ``--port`` changes.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

STAFF_SECTION = "## For program staff"
AUDITOR_SECTION = "## For auditors"
#: The API address the README's examples use.
README_API = "http://127.0.0.1:8080"
#: Variables an example prints, which later examples use: name -> (command, pattern).
PRINTED: dict[str, tuple[str, str]] = {"KID": ("leadhub audit keygen", r"key id (\S+)")}

#: Example lines deliberately not run (each must still be in the README), and why.
NOT_RUN: dict[str, str] = {
    "leadhub keys create": "issues a credential; the demo issued TOKEN",
    "leadhub keys list": "lists credentials, not the view",
    "leadhub keys rotate": "needs a KEY_ID and revokes it",
    "leadhub keys revoke": "needs a KEY_ID and revokes it",
    "leadhub serve": "the demo already serves the API",
    "leadhub audit checkpoint --every": "runs until SIGTERM (`checkpoint --once` is run)",
}


def section(readme: str, heading: str) -> str:
    """The text of the ``## heading...`` section, up to the next ``## `` heading."""
    start = readme.index(heading)
    end = readme.find("\n## ", start + len(heading))
    return readme[start:] if end < 0 else readme[start:end]


def example_lines(text: str) -> list[str]:
    """The raw command lines of the ```sh blocks in ``text`` (quotes and comments kept)."""
    lines: list[str] = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S):
        lines += [line for line in block.splitlines() if shlex.split(line, comments=True)]
    return lines


def command_of(line: str) -> list[str]:
    """The words of ``line`` without its comment."""
    return shlex.split(line, comments=True)


def skipped_by(line: str) -> str | None:
    """The :data:`NOT_RUN` prefix that ``line`` starts with, if any."""
    text = shlex.join(command_of(line))
    return next((prefix for prefix in NOT_RUN if text.startswith(prefix)), None)


def readme_examples(readme: str) -> list[str]:
    """The staff and auditor example lines to run, in README order (:data:`NOT_RUN` aside)."""
    lines = example_lines(section(readme, STAFF_SECTION))
    lines += example_lines(section(readme, AUDITOR_SECTION))
    return [line for line in lines if skipped_by(line) is None]


def stale_skips(readme: str) -> list[str]:
    """:data:`NOT_RUN` entries that no staff or auditor example line starts with any more."""
    lines = example_lines(section(readme, STAFF_SECTION))
    lines += example_lines(section(readme, AUDITOR_SECTION))
    used = {skipped_by(line) for line in lines}
    return [prefix for prefix in NOT_RUN if prefix not in used]


def variables(line: str) -> set[str]:
    """The shell variables ``line`` expands (``$NAME`` or ``${NAME}``)."""
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", line))


def parse_export(line: str) -> dict[str, str]:
    """``{NAME: value}`` of an ``export NAME=value ...`` line, values unquoted as a shell would."""
    words = shlex.split(line.strip())
    assert words[:1] == ["export"], line
    return dict(word.split("=", 1) for word in words[1:])


def printed_values(line: str, stdout: str) -> dict[str, str]:
    """The :data:`PRINTED` variables that running ``line`` printed on ``stdout``."""
    found: dict[str, str] = {}
    text = shlex.join(command_of(line))
    for name, (command, pattern) in PRINTED.items():
        match = re.search(pattern, stdout)
        if text.startswith(command) and match:
            found[name] = match.group(1)
    return found


def _json(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return None


def _number(pattern: str) -> Callable[[str, str], int | None]:
    def count(stdout: str, stderr: str) -> int | None:
        match = re.search(pattern, stdout + "\n" + stderr)
        return int(match.group(1).replace(",", "")) if match else 0
    return count


def _lines(stdout: str, stderr: str) -> int:
    return len([line for line in stdout.splitlines() if line.strip()])


def _json_list(key: str | None) -> Callable[[str, str], int | None]:
    def count(stdout: str, stderr: str) -> int | None:
        answer = _json(stdout)
        if isinstance(answer, dict) and key is not None:
            answer = answer.get(key)
        return len(answer) if isinstance(answer, list) else 0
    return count


def _checkpoint(stdout: str, stderr: str) -> int:
    return sum(int(size) for size in re.findall(r"\bp\d+=(\d+)", stdout))


def _compare(stdout: str, stderr: str) -> int | None:
    if "match:" not in stdout:
        return 0
    return _number(r"live\s+sha256:\S+ \((\d+) rows\)")(stdout, stderr)


#: How to count the answer of each kind of example: (command prefix, needs --json, counter).
ANSWERS: list[tuple[str, bool | None, Callable[[str, str], int | None]]] = [
    ("curl", None, _json_list("items")),
    ("leadhub view", True, _json_list(None)),
    ("leadhub view", False, _lines),
    ("leadhub audit replay", None, _number(r"\((\d+) rows from")),
    ("leadhub audit compare", None, _compare),
    ("leadhub audit reconcile", None, _number(r"accounted: all ([\d,]+) inbound records")),
    ("leadhub audit as-of", True, _json_list(None)),
    ("leadhub audit as-of", False, _lines),
    ("leadhub audit keygen", None, lambda out, err: 1 if re.search(r"key id \S+", out) else 0),
    ("leadhub audit checkpoint --once", None, _checkpoint),
    ("leadhub audit export", None, _number(r"exported (\d+) records")),
    ("leadhub audit verify", None, _number(r"verified: (\d+) records")),
    ("leadhub audit disclosures", True, _json_list("disclosures")),
    ("leadhub audit disclosures", False, _lines),
]


def answer_count(line: str, stdout: str, stderr: str) -> int | None:
    """How many rows (records, items, ...) ``line`` answered; None if no rule reads it."""
    words = command_of(line)
    text = shlex.join(words)
    for prefix, needs_json, count in ANSWERS:
        if text.startswith(prefix) and needs_json in (None, "--json" in words):
            return count(stdout, stderr)
    return None


def answer_problem(line: str, returncode: int, stdout: str, stderr: str) -> str | None:
    """What is wrong with the answer of example ``line``: a failure, no rule, or nothing."""
    if returncode != 0:
        return f"{line}\n  exit {returncode}: {(stderr or stdout).strip()[-400:]}"
    count = answer_count(line, stdout, stderr)
    if count is None:
        return f"{line}\n  no rule in tests/readme_examples.py reads this example's answer"
    if count <= 0:
        return f"{line}\n  answered nothing: {stdout.strip()[:300]!r} {stderr.strip()[-300:]!r}"
    return None
