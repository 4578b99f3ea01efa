"""The CLI edge: exit codes come from one table in ``leadhub.cli``, and flags name their variables.

The error classes carry no exit code; ``leadhub.cli.exit_code_for`` maps them, along the MRO,
to the codes README documents (0 success, 1 failure, 2 setup or usage error, 3 an empty audit
window). Each expectation below is the code the class gave before the table existed.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from consumers.api.client import ApiClientError
from consumers.api.errors import CredentialError, NotFound
from consumers.audit.errors import (
    AuditError,
    BundleError,
    CheckpointError,
    EmptyWindowError,
    ReplayError,
    SetupError,
)
from consumers.errors import ConsumerError, ProjectionVersionMismatch, ViewStoreError
from consumers.live_projector import CACHE_WEIGHT
from leadhub import cli
from leadhub.demo_feed import DemoFeedError
from leadhub.errors import DemoSetupError, UsageError
from leadhub.services import PrerequisiteMissing, ServiceError
from leadhub.settings import SettingsError, load_settings
from processors.errors import PolicyError, SiteError, StateError
from processors.kafka_validator import ValidatorError, ValidatorFenced
from producers.sdk import PublishError
from producers.simulator import SimulationError
from schemas.errors import CatalogError, ContractError, HubError, MalformedBody
from tests.factories import ROOT

EXPECTED_EXIT_CODES: dict[type[HubError], int] = {
    # 2: fix a setting, a file, an install or the command line, then rerun
    SettingsError: 2,
    SiteError: 2,
    UsageError: 2,
    PrerequisiteMissing: 2,
    SetupError: 2,
    ProjectionVersionMismatch: 2,
    SimulationError: 2,
    DemoSetupError: 2,
    # 3: an audit window with nothing in it
    EmptyWindowError: 3,
    # 1: every other error, roots and leaves
    HubError: 1,
    ContractError: 1,
    MalformedBody: 1,
    CatalogError: 1,
    PolicyError: 1,
    StateError: 1,
    ConsumerError: 1,
    ViewStoreError: 1,
    AuditError: 1,
    ReplayError: 1,
    CheckpointError: 1,
    BundleError: 1,
    NotFound: 1,
    CredentialError: 1,
    ApiClientError: 1,
    ServiceError: 1,
    ValidatorError: 1,
    ValidatorFenced: 1,
    PublishError: 1,
    DemoFeedError: 1,
}


@pytest.mark.parametrize("error_type", list(EXPECTED_EXIT_CODES), ids=lambda t: t.__name__)
def test_each_error_class_exits_with_its_documented_code(error_type: type[HubError]) -> None:
    assert cli.exit_code_for(error_type) == EXPECTED_EXIT_CODES[error_type]


def test_a_subclass_inherits_the_code_of_its_nearest_listed_ancestor() -> None:
    class BadPartnerRow(SiteError):
        pass

    class NotAuditable(AuditError):
        pass

    assert cli.exit_code_for(BadPartnerRow) == 2
    assert cli.exit_code_for(NotAuditable) == 1


def test_no_error_class_carries_an_exit_code() -> None:
    pattern = re.compile(r"^\s*exit_code\s*=|\bexit_code=", re.M)
    carrying = [str(path.relative_to(ROOT))
                for package in ("schemas", "processors", "consumers", "producers", "leadhub")
                for path in sorted((ROOT / package).rglob("*.py"))
                if pattern.search(path.read_text())]
    assert carrying == []


def _parser_raising(error: BaseException) -> argparse.ArgumentParser:
    def handler(args: argparse.Namespace) -> int:
        raise error

    parser = argparse.ArgumentParser(prog="leadhub")
    parser.set_defaults(handler=handler)
    return parser


@pytest.mark.parametrize(("error", "code"), [
    (SettingsError("LEADHUB_PARTITIONS='0' must be at least 1"), 2),
    (PrerequisiteMissing("java not found: install it"), 2),
    (UsageError("'nobody' is not a partner of the site file"), 2),
    (EmptyWindowError("no record of lead.events was received in the window"), 3),
    (ServiceError("kafka did not answer within 60s; see its log"), 1),
], ids=lambda value: type(value).__name__ if isinstance(value, HubError) else str(value))
def test_main_prints_the_error_in_one_line_and_returns_its_code(
        error: HubError, code: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_raising(error))
    assert cli.main([]) == code
    assert capsys.readouterr().err == f"leadhub: error: {error}\n"


def test_interrupt_and_a_closed_pipe_keep_their_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_raising(KeyboardInterrupt()))
    assert cli.main([]) == 130
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_raising(BrokenPipeError()))
    assert cli.main([]) == 0


def test_an_unknown_partner_is_a_usage_error_before_kafka_is_asked(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["partners", "credentials", "create", "nobody"]) == 2
    assert "'nobody' is not a partner of the site file" in capsys.readouterr().err


# -- each flag's help names the LEADHUB_* variable its default comes from ----------------------

#: Every flag whose default comes from a setting, and the variable behind that setting.
FLAGS_DEFAULTING_TO_A_SETTING: dict[tuple[str, ...], str] = {
    ("topics", "create", "--site"): "LEADHUB_SITE_FILE",
    ("publish", "--as"): "LEADHUB_KAFKA_USERNAME",
    ("audit", "reconcile", "--validator-group"): "LEADHUB_TOPIC_PREFIX",
}


def _parsers(parser: argparse.ArgumentParser,
             path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                         argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _help_texts() -> Iterator[tuple[tuple[str, ...], str]]:
    """(command path + option, text) for every description and every option's help."""
    for path, parser in _parsers(cli.build_parser()):
        yield path, parser.description or ""
        for action in parser._actions:
            for option in action.option_strings or [action.dest]:
                yield (*path, option), action.help or ""


def test_each_flag_defaulting_to_a_setting_names_its_variable() -> None:
    helps = dict(_help_texts())
    for flag, variable in FLAGS_DEFAULTING_TO_A_SETTING.items():
        assert flag in helps, f"{' '.join(flag)} is not an option of leadhub"
        assert variable in helps[flag], f"{' '.join(flag)}: {helps[flag]!r}"


def test_the_help_names_only_variables_the_hub_reads() -> None:
    read = set(re.findall(r"\bLEADHUB_[A-Z0-9_]+", (ROOT / "leadhub" / "settings.py").read_text()))
    read.add("LEADHUB_DEBUG")  # read by leadhub.cli itself
    named = {(" ".join(where), variable) for where, text in _help_texts()
             for variable in re.findall(r"\bLEADHUB_[A-Z0-9_]+", text)}
    assert named, "no help text names a variable"
    assert [(where, variable) for where, variable in sorted(named) if variable not in read] == []


def test_the_projector_cache_setting_defaults_to_the_projectors_own_default() -> None:
    assert load_settings({}).projector_cache == CACHE_WEIGHT
