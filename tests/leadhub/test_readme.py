"""The README's commands, flags, variables and endpoints stay true.

Each ``*_problems(readme)`` checker takes the README text and returns what is wrong with it;
the tests assert the real README has no problems, and ``test_each_checker_catches_its_mistake``
feeds every checker a README with one planted mistake, so none of them can pass vacuously.
The ``curl`` queries the demo prints, and the README's staff and auditor examples (with the
values of the demo's ``export`` line), are run against the running demo by
``tests/leadhub/test_demo.py``; the tests at the end here check, without a broker, that those
examples are found, that an empty or failed answer is caught, and that the participant the
README names is the default demo's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from leadhub.cli import build_parser
from leadhub.settings import load_settings
from schemas.kafka_connection import KafkaConnection
from tests.factories import ROOT

README = (ROOT / "README.md").read_text()
CODE_DIRS = ("leadhub", "schemas", "producers", "processors", "consumers")
HTTP_METHODS = "GET|POST|PUT|PATCH|DELETE"


# -- extraction -----------------------------------------------------------------------------

def shell_lines(readme: str) -> list[str]:
    """Every command line of the ```sh / ```bash blocks, comments stripped."""
    lines: list[str] = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", readme, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(shlex.join(words))
    return lines


def leadhub_argvs(readme: str) -> list[list[str]]:
    """The argv (after ``leadhub``) of every ``leadhub`` command in the shell blocks."""
    argvs: list[list[str]] = []
    for line in shell_lines(readme):
        words = shlex.split(line)
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words = words[1:]  # VAR=value prefixes
        if words and Path(words[0]).name == "leadhub":
            argvs.append(words[1:])
    return argvs


def inline_leadhub(readme: str) -> list[str]:
    """Every inline code span that is a ``leadhub`` command (``leadhub audit replay|compare``)."""
    return [span for span in re.findall(r"`([^`\n]+)`", readme)
            if span.startswith("leadhub ")]


def readme_variables(readme: str) -> set[str]:
    """Every ``LEADHUB_*`` name in the README."""
    return set(re.findall(r"\bLEADHUB_[A-Z0-9_]+", readme))


def configuration_table(readme: str) -> dict[str, str]:
    """Variable -> default column of the Configuration table."""
    section = readme.split("### Configuration", 1)[-1]
    rows = re.findall(r"^\| `(LEADHUB_[A-Z0-9_]+)` \| ([^|]*) \|", section, flags=re.M)
    return {name: default.strip() for name, default in rows}


def code_variables() -> set[str]:
    """Every ``LEADHUB_*`` name the package code reads or names."""
    found: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(re.findall(r"\bLEADHUB_[A-Z0-9_]+", path.read_text()))
    return found - {"LEADHUB_"}


# -- the CLI --------------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def cli_problems(readme: str) -> list[str]:
    """Shell-block ``leadhub`` commands that the real parser rejects."""
    problems = []
    for argv in leadhub_argvs(readme):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                build_parser().parse_args(argv)
        except SystemExit:
            problems.append(f"leadhub {shlex.join(argv)}: {stderr.getvalue().strip()[-200:]}")
    return problems


def inline_cli_problems(readme: str) -> list[str]:
    """Inline ``leadhub ...`` spans naming a command, action or flag that does not exist.

    ``a|b`` means each of a and b; words after the command path other than flags are values.
    """
    problems = []
    for span in inline_leadhub(readme):
        parser = build_parser()
        for word in span.split()[1:]:
            if word.startswith("-"):
                flag = word.split("=", 1)[0]
                if flag not in _options(parser):
                    problems.append(f"`{span}`: no flag {flag} for `{parser.prog}`")
                continue
            choices = _subparsers(parser)
            if not choices:
                continue  # a value or positional argument
            alternatives = word.split("|")
            missing = [a for a in alternatives if a not in choices]
            if missing:
                problems.append(f"`{span}`: `{parser.prog}` has no {', '.join(missing)}")
                break
            parser = choices[alternatives[0]]
    return problems


def make_problems(readme: str) -> list[str]:
    """``make TARGET`` commands whose target the Makefile lacks."""
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.M))
    problems = []
    for line in shell_lines(readme):
        words = shlex.split(line)
        if words[:1] == ["make"]:
            problems += [f"make {t}: no such target" for t in words[1:] if t not in targets]
    for span in re.findall(r"`make ([\w-]+)`", readme):
        if span not in targets:
            problems.append(f"`make {span}`: no such target")
    return problems


# -- configuration --------------------------------------------------------------------------

#: Variables whose README default is checked against :func:`load_settings` with no environment.
SETTINGS_DEFAULTS = {
    "LEADHUB_PARTITIONS": "partitions",
    "LEADHUB_TICK_SECONDS": "tick_interval_s",
    "LEADHUB_KAFKA_VERSION": "kafka_version",
    "LEADHUB_KAFKA_PORT": "kafka_port",
    "LEADHUB_KAFKA_CONTROLLER_PORT": "kafka_controller_port",
    "LEADHUB_POSTGRES_PORT": "postgres_port",
}


def variable_problems(readme: str) -> list[str]:
    """Variables named in the README but not in the code, read by the code but missing from the
    Configuration table, or documented with a default the settings do not have."""
    in_code = code_variables()
    table = configuration_table(readme)
    problems = [f"{name} is in the README but not in the code"
                for name in sorted(readme_variables(readme) - in_code)]
    problems += [f"{name} is read by the code but not in the Configuration table"
                 for name in sorted(in_code - set(table))]
    defaults = load_settings({})
    for name, attribute in SETTINGS_DEFAULTS.items():
        value = getattr(defaults, attribute)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if name in table and text not in table[name]:
            problems.append(f"{name}: the README's default {table[name]!r} is not {text}")
    return problems


# -- HTTP -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OpenAPI document of the app ``leadhub serve`` runs."""
    from consumers.api.access_log import MemoryAccessLog
    from consumers.api.app import create_api
    from consumers.api.context import ApiConfig
    from processors.site import load_site

    url = f"sqlite:///{tmp_path_factory.mktemp('readme') / 'api.sqlite'}"
    app = create_api(ApiConfig(url, KafkaConnection("127.0.0.1:1")),
                     site=load_site(load_settings({}).site_file), access_log=MemoryAccessLog())
    spec: dict[str, Any] = app.openapi()
    return spec


def _route_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def _find_route(spec: dict[str, Any], method: str, path: str) -> str | None:
    for template, operations in spec["paths"].items():
        if method.lower() in operations and _route_pattern(template).fullmatch(path):
            return str(template)
    return None


def readme_requests(readme: str) -> Iterator[tuple[str, str, str]]:
    """(method, path, where) of every ``METHOD /path`` in the text and every curl URL."""
    for method, path in re.findall(rf"\b({HTTP_METHODS}) (/[\w/{{}}:.$-]+)", readme):
        yield method, path, f"{method} {path}"
    for line in shell_lines(readme):
        words = shlex.split(line)
        if words[:1] != ["curl"]:
            continue
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        for word in words:
            if word.startswith("http"):
                yield method, re.sub(r"^https?://[^/]+|\?.*$", "", word), line[:80]


def http_problems(readme: str, spec: dict[str, Any]) -> list[str]:
    """README requests the API has no route for, and API routes the README never mentions."""
    problems = []
    documented: set[tuple[str, str]] = set()
    for method, path, where in readme_requests(readme):
        route = _find_route(spec, method, path)
        if route is None:
            problems.append(f"{where}: the API has no {method} {path}")
        else:
            documented.add((method.lower(), route))
    for template, operations in spec["paths"].items():
        for method in operations:
            if (method, template) not in documented:
                problems.append(f"{method.upper()} {template} is not in the README")
    return problems


def gateway_status_problems(readme: str, spec: dict[str, Any]) -> list[str]:
    """The gateway's status table must list exactly the codes POST /v1/events answers."""
    section = readme.split("### Over HTTP", 1)[-1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (\d{3}) \|", section, flags=re.M))
    answered = set(spec["paths"]["/v1/events"]["post"]["responses"]) - {"422"}
    return ([f"the README lists {code}, which POST /v1/events never answers"
             for code in sorted(listed - answered)]
            + [f"POST /v1/events answers {code}, missing from the README's table"
               for code in sorted(answered - listed)])


def curl_body_problems(readme: str) -> list[str]:
    """JSON bodies (``-d``) of the README's curl commands must be valid: an event of the
    catalog, or for ``/v1/participants`` a link request the API takes."""
    from pydantic import ValidationError

    from consumers.api.models import LinkRequest
    from schemas.catalog import load_catalog
    from schemas.codec import encode
    from schemas.errors import HubError
    from schemas.event import event_from_json

    catalog = load_catalog()
    problems = []
    for line in shell_lines(readme):
        words = shlex.split(line)
        if words[:1] == ["curl"] and "-d" in words:
            body = words[words.index("-d") + 1]
            if any(w.endswith("/v1/participants") for w in words):
                try:
                    LinkRequest.model_validate_json(body)
                except ValidationError as exc:
                    problems.append(f"curl body is not a link request: {exc.errors()[0]}")
                continue
            try:
                encode(event_from_json(json.loads(body), catalog), catalog)
            except (ValueError, HubError) as exc:
                problems.append(f"curl body is not a valid event: {exc}")
    return problems


def staff_header_problems(readme: str) -> list[str]:
    """Every staff GET in a curl command sends the Authorization and X-Purpose headers (a
    partner key's crosswalk lookup, ``/v1/identifiers/...``, only Authorization)."""
    problems = []
    for line in shell_lines(readme):
        words = shlex.split(line)
        if words[:1] == ["curl"] and "-X" not in words and "/v1/identifiers/" in line:
            if not any(w.startswith("Authorization:") for w in words):
                problems.append(f"crosswalk lookup without Authorization: {line[:80]}")
        elif words[:1] == ["curl"] and "-X" not in words:
            headers = [words[i + 1].split(":", 1)[0] for i, w in enumerate(words) if w == "-H"]
            if "Authorization" not in headers or "X-Purpose" not in headers:
                problems.append(f"staff query without Authorization and X-Purpose: {line[:80]}")
    return problems


# -- the tests ------------------------------------------------------------------------------

def test_the_readme_has_what_the_issue_asks_for() -> None:
    assert "```mermaid" in README
    assert re.search(r"```sh\nmake demo .*\nmake test ", README), "quick start: the two commands"
    for heading in ("## For partners", "## For program staff", "## For auditors",
                    "## Operations", "### Configuration"):
        assert heading in README
    assert len(leadhub_argvs(README)) >= 30 and len(inline_leadhub(README)) >= 5


def test_every_leadhub_command_in_the_shell_blocks_parses() -> None:
    assert cli_problems(README) == []


def test_every_inline_leadhub_command_and_flag_exists() -> None:
    assert inline_cli_problems(README) == []


def test_every_cli_command_is_documented() -> None:
    documented = {argv[0] for argv in leadhub_argvs(README)}
    documented |= {span.split()[1] for span in inline_leadhub(README)}
    assert set(_subparsers(build_parser())) - documented == set()
    audit = {argv[1] for argv in leadhub_argvs(README) if argv[0] == "audit"}
    assert set(_subparsers(_subparsers(build_parser())["audit"])) - audit == set()


def test_make_targets_exist() -> None:
    assert make_problems(README) == []


def test_configuration_reference_is_complete_and_true() -> None:
    assert len(configuration_table(README)) >= 12
    assert variable_problems(README) == []


def test_every_http_path_exists_and_every_route_is_documented(openapi: dict[str, Any]) -> None:
    assert http_problems(README, openapi) == []


def test_gateway_status_codes_match_the_api(openapi: dict[str, Any]) -> None:
    assert gateway_status_problems(README, openapi) == []


def test_curl_examples_are_valid_requests() -> None:
    assert curl_body_problems(README) == []
    assert staff_header_problems(README) == []


def test_the_demos_printed_queries_are_valid_staff_requests(openapi: dict[str, Any]) -> None:
    """The curl commands the demo prints hit real routes with the headers staff need.

    (tests/leadhub/test_demo.py runs them, as printed, against the running demo.)
    """
    from leadhub.demo_showcase import SHOWN_ROLES, Showcase, showcase_queries

    partners = {role: f"partner-{role}" for role, _ in SHOWN_ROLES}
    queries = showcase_queries(Showcase("p-0123456789abcdef", partners), "http://127.0.0.1:8080",
                               {p: "secret" for p in partners.values()},
                               {p: "purpose" for p in partners.values()})
    printed = "```sh\n" + "\n".join(command for _, command in queries) + "\n```\n"
    assert len(queries) >= 6
    assert staff_header_problems(printed) == []
    assert [problem for problem in http_problems(printed, openapi)
            if "is not in the README" not in problem] == []


MISTAKES = [
    ("cli", "leadhub keys create --partner harbor-cm --kind staff --user jdoe",
     "leadhub keys create --partner harbor-cm --kind staff --username jdoe"),
    ("cli", "leadhub audit checkpoint --once", "leadhub audit checkpoint --one"),
    ("inline", "`leadhub services stop`", "`leadhub services halt`"),
    ("inline", "|export|verify|", "|export|check|"),
    ("inline", "`leadhub simulate --publish --rate N`", "`leadhub simulate --publish --pace N`"),
    ("make", "make test ", "make tests "),
    ("variables", "| `LEADHUB_DEBUG` |", "| `LEADHUB_DEBUGGING` |"),
    ("variables", "| `LEADHUB_PARTITIONS` | 4 |", "| `LEADHUB_PARTITIONS` | 8 |"),
    ("http", "`GET /v1/me`", "`GET /v1/whoami`"),
    ("http", "/v1/intake-deadlines?due_before", "/v1/deadlines?due_before"),
    ("status", "| 415 |", "| 418 |"),
    ("body", '"successful": true', '"successful": "yes"'),
    ("body", '{"local_id": "BK-2026-000123"}', '{"local_id": "BK 2026/000123"}'),
    ("headers", '-H "Authorization: Bearer $KEY" http://127.0.0.1:8080/v1/identifiers/',
     "http://127.0.0.1:8080/v1/identifiers/"),
    ("http", "`GET /v1/identifiers/{local_id}`", "`GET /v1/identifier/{local_id}`"),
    ("headers", "-H 'X-Purpose: care_coordination' http://127.0.0.1:8080/v1/participants\n",
     "http://127.0.0.1:8080/v1/participants\n"),
]


@pytest.mark.parametrize(("checker", "right", "wrong"), MISTAKES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_checker_catches_its_mistake(checker: str, right: str, wrong: str,
                                          openapi: dict[str, Any]) -> None:
    assert right in README, "the planted mistake must replace text the README has"
    broken = README.replace(right, wrong, 1)
    found = {
        "cli": lambda text: cli_problems(text),
        "inline": lambda text: inline_cli_problems(text),
        "make": lambda text: make_problems(text),
        "variables": lambda text: variable_problems(text),
        "http": lambda text: http_problems(text, openapi),
        "status": lambda text: gateway_status_problems(text, openapi),
        "body": lambda text: curl_body_problems(text),
        "headers": lambda text: staff_header_problems(text),
    }[checker](broken)
    assert found, f"the {checker} check missed: {wrong!r}"


# -- the README's staff and auditor examples (run on the demo's data by tests/leadhub/test_demo.py)

#: A non-empty answer of each kind of example, as the commands print it.
SAMPLE_ANSWERS = {
    "curl": ('{"items": [{"participant_id": "p-0123456789abcdef"}], "next_cursor": null}', ""),
    "leadhub view --as harbor-cm --purpose care_coordination --json": ('[{"event_id": "e"}]', ""),
    "leadhub view --as": ("2026-09-01T00:00:00Z  p-0123456789abcdef  ReferralMade  REFERRAL\n",
                          "1 rows"),
    "leadhub audit replay": ("view digest sha256:ab (12 rows from 40 records of lead.events)\n",
                             ""),
    "leadhub audit compare": ("live   sha256:ab (12 rows)\nreplay sha256:ab (12 rows)\n"
                              "match: the live view equals the replay of lead.events\n", ""),
    "leadhub audit reconcile": ("accounted: all 1,234 inbound records are accepted, "
                                "dead-lettered or pending (0 pending)\n", ""),
    "leadhub audit as-of": ("2026-09-01T00:00:00Z  p-0123456789abcdef  ReferralMade  "
                            "REFERRAL\n", "1 rows visible"),
    "leadhub audit keygen": ("key id 0123456789abcdef\npublic key /x/audit/key.pub\n", ""),
    "leadhub audit checkpoint --once": ("checkpoint 2026-11-30T14:00:00Z key k: p0=5 p1=7\n",
                                        ""),
    "leadhub audit export": ("exported 40 records of lead.events to b (key id k)\n", ""),
    "leadhub audit verify": ("verified: 40 records, 1 signed checkpoints, key id k\n", ""),
    "leadhub audit disclosures": ('{"disclosures": [{"kind": "materialized"}]}', ""),
}


def _sample(line: str) -> tuple[str, str]:
    from tests.readme_examples import command_of

    text = shlex.join(command_of(line))
    return next(answer for prefix, answer in sorted(SAMPLE_ANSWERS.items(),
                                                     key=lambda item: -len(item[0]))
                if text.startswith(prefix))


def test_the_staff_and_auditor_examples_are_found_and_every_skip_is_still_there() -> None:
    from tests.readme_examples import command_of, readme_examples, stale_skips

    examples = readme_examples(README)
    kinds = {command_of(line)[0] for line in examples}
    assert kinds == {"curl", "leadhub"}, kinds
    assert sum(line.startswith("curl") for line in examples) >= 3
    assert sum(line.startswith("leadhub audit") for line in examples) >= 9
    assert stale_skips(README) == []


def test_an_empty_or_failed_example_answer_is_caught() -> None:
    """Each example has a rule reading its answer: a real answer passes, an empty one, a failure
    or an answer no rule reads fails, so the demo test cannot pass on empty answers."""
    from tests.readme_examples import answer_problem, readme_examples

    for line in readme_examples(README):
        stdout, stderr = _sample(line)
        assert answer_problem(line, 0, stdout, stderr) is None, line
        assert answer_problem(line, 1, stdout, stderr) is not None, line
        empty = '{"items": [], "disclosures": []}' if stdout.startswith("{") else (
            "[]" if stdout.startswith("[") else re.sub(r"\b[1-9][\d,]*", "0", stdout))
        if "keygen" in line:
            empty = "no key\n"
        if (line.startswith("leadhub view") and "--json" not in line) or "as-of" in line:
            empty = ""
        assert answer_problem(line, 0, empty, "") is not None, (line, empty)
    assert answer_problem("leadhub status", 0, "anything", "") is not None


def test_the_readme_uses_only_the_placeholders_it_documents() -> None:
    """The examples' variables are the demo's (``README_VARIABLES``, each explained in the
    README) and those an example prints (KID); the demo's export line sets exactly those."""
    from leadhub.demo_showcase import README_VARIABLES, Showcase, export_line, readme_values
    from tests.readme_examples import PRINTED, parse_export, readme_examples, variables

    used = set().union(*(variables(line) for line in readme_examples(README)))
    assert used == set(README_VARIABLES) | set(PRINTED)
    for name in README_VARIABLES:
        assert f"`{name}`" in README
    end = datetime(2026, 11, 30, 14, 5, 38, 123456, tzinfo=UTC)
    showcase = Showcase("p-0123456789abcdef", {}, end - timedelta(days=40, hours=3))
    values = readme_values(showcase, "lh_k_s3cr3t", end, 14, end + timedelta(seconds=3.5),
                           end + timedelta(seconds=20.2))
    assert values == {"TOKEN": "lh_k_s3cr3t", "P": "p-0123456789abcdef",
                      "SINCE": "2026-10-21T00:00:00Z", "DUE_BEFORE": "2026-12-15T00:00:00Z",
                      "FROM": "2026-11-30T14:05:41Z", "UNTIL": "2026-11-30T14:05:59Z"}
    assert parse_export(export_line(values)) == values


def test_the_readme_names_the_default_demos_participant() -> None:
    """``leadhub demo`` with its default options shows the participant the README names."""
    from leadhub.demo_showcase import pick_showcase
    from processors.projector import Projector
    from processors.site import load_site
    from producers.simulator import simulate
    from schemas.catalog import load_catalog

    defaults = _subparsers(build_parser())["demo"].parse_args([])
    site, catalog = load_site(load_settings({}).site_file), load_catalog()
    end = datetime.now(UTC).replace(microsecond=0)
    events = list(simulate(site, catalog, defaults.participants, defaults.days, defaults.seed,
                           end - timedelta(days=defaults.days)))
    showcase = pick_showcase(events, Projector(site, catalog), site)
    named = re.search(r"`P`[^`]*`(p-[0-9a-f]{16})`\s+with the default options", README)
    assert showcase is not None and named is not None
    assert showcase.participant_id == named.group(1)
    assert showcase.housing_from is not None
