"""One synthetic participant's story, produced week by week in time order.

A :class:`Timeline` plans a participant's path through a LEAD program — referral, screening,
intake (on time, late or never), assessment, case management contacts, services (housing, SUD
treatment from the Part 2 program, mental health, benefits, employment), legal events and
consents — and yields the events in ``occurred_at`` order. Events planned for later sit in a
small per-participant heap; the story itself is generated one week at a time.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from schemas.event import Event

#: Share of referrals through each door (arrest diversion, social contact, community).
DOOR_WEIGHTS = {"ARREST_DIVERSION": 0.50, "SOCIAL_CONTACT": 0.35, "COMMUNITY": 0.15}
WEEK = timedelta(days=7)
DAY = timedelta(days=1)

FIRST_NAMES = ("Avery", "Blake", "Casey", "Dakota", "Emery", "Finley", "Harper", "Jessie",
               "Kendall", "Logan", "Morgan", "Parker", "Quinn", "Reese", "Rowan", "Sage")
LAST_NAMES = ("Ashgrove", "Brambleton", "Copperfield", "Dunmore", "Elderwood", "Fallowmere",
              "Glenhollow", "Hartwell", "Ivywood", "Juniper", "Kestrel", "Larkspur")
STAFF = ("J. Testwell", "M. Placeholder", "R. Sampleton", "T. Fictional", "K. Madeup")
OFFENSES = ("DRUG_POSSESSION", "DRUG_POSSESSION", "PROSTITUTION", "THEFT", "TRESPASS")
AREAS = ("Downtown", "Eastside", "Harbor", "North Precinct", "South Precinct")
CONSENT_PURPOSES = ["care_coordination", "legal_defense", "program_operations"]


@dataclass(frozen=True)
class Cast:
    """Which site partner plays each role (the first partner of that role in the site file)."""

    by_role: dict[str, str]

    def partner(self, role: str) -> str | None:
        """Return the partner id playing ``role``, or None if the site has no such partner."""
        return self.by_role.get(role)


class Timeline:
    """One participant's synthetic history between ``arrival`` and ``end``."""

    def __init__(
        self, rng: random.Random, cast: Cast, deadline_days: int, arrival: datetime, end: datetime
    ) -> None:
        self.rng = rng
        self.cast = cast
        self.deadline_days = deadline_days
        self.arrival = arrival
        self.end = end
        self.participant_id = "p-" + uuid.UUID(int=rng.getrandbits(128), version=4).hex[:16]
        self._planned: list[tuple[datetime, int, Event]] = []
        self._count = 0
        self._case_manager = rng.choice(STAFF)
        self._consents: list[str] = []

    # -- planning ----------------------------------------------------------------------------

    def plan(self, type_name: str, at: datetime, role: str, **payload: Any) -> Event | None:
        """Plan an event by the partner playing ``role``; None if no such partner or too late."""
        source = self.cast.partner(role)
        if source is None or at >= self.end:
            return None
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        event = Event(event_id, type_name, self.participant_id, at, payload, source)
        heapq.heappush(self._planned, (at, self._count, event))
        self._count += 1
        return event

    def events(self) -> Iterator[Event]:
        """Yield the whole story in time order, generating it one week at a time."""
        engaged_from = self._referral()
        if engaged_from is not None:
            exit_at = self._exit_time(engaged_from)
            week = engaged_from
            while week < min(self.end, exit_at):
                yield from self._release(week)
                self._week(week)
                week += WEEK
        yield from self._release(self.end + DAY)

    def _release(self, before: datetime) -> Iterator[Event]:
        while self._planned and self._planned[0][0] < before:
            yield heapq.heappop(self._planned)[2]

    def _after(self, at: datetime, low_days: float, high_days: float) -> datetime:
        offset = timedelta(days=self.rng.uniform(low_days, high_days))
        return (at + offset).replace(microsecond=0)

    # -- the story ---------------------------------------------------------------------------

    def _referral(self) -> datetime | None:
        """Plan referral, screening and intake; return when engagement starts (None: never)."""
        rng, at = self.rng, self.arrival.replace(microsecond=0)
        door = rng.choices(list(DOOR_WEIGHTS), weights=list(DOOR_WEIGHTS.values()))[0]
        arrest = door == "ARREST_DIVERSION"
        held = arrest and rng.random() < 0.9
        referral = self.plan(
            "ReferralMade", at, "case_management" if door == "COMMUNITY" else "police",
            door=door,
            offense_category=rng.choice(OFFENSES) if arrest else None,
            charges_held=held,
            referring_officer=None if door == "COMMUNITY" else f"badge {rng.randint(1000, 9999)}",
            area=rng.choice(AREAS),
            warm_handoff_at=self._after(at, 0.01, 0.2) if arrest else None,
        )
        if referral is None:
            return None
        if arrest:
            self.plan("IdentifierLinked", at, "police", partner=self.cast.partner("police") or "",
                      local_id=f"BK-{rng.randint(100000, 999999)}")
        if held:
            self.plan("ChargesHeld", self._after(at, 0.1, 1.5), "prosecutor",
                      referral_event_id=referral.event_id, charges=[f"RCW {rng.randint(9, 69)}"],
                      hold_days=self.deadline_days)
        eligible = rng.random() < 0.93
        self.plan("ReferralScreened", self._after(at, 0.05, 2), "case_management",
                  referral_event_id=referral.event_id, eligible=eligible,
                  screened_by=self._case_manager)
        if not eligible:
            return None
        outcome = rng.random()
        if held:
            if outcome < 0.70:
                intake_at = self._after(at, 0.5, self.deadline_days - 0.5)
            elif outcome < 0.82:
                intake_at = self._after(at, self.deadline_days + 0.5, self.deadline_days + 20)
            else:
                intake_at = None
        else:
            intake_at = self._after(at, 1, 30) if outcome < 0.65 else None
        for _ in range(rng.randint(0, 3)):
            self.plan("ContactLogged", self._after(at, 0.5, 10), "case_management",
                      contact_method="OUTREACH", successful=False, duration_minutes=None)
        if intake_at is None:
            if held:
                self._charges_filed(at + timedelta(days=self.deadline_days), missed=True)
            return None
        self._intake(intake_at, referral.event_id)
        if held:
            self._legal_case(intake_at, late=intake_at > at + timedelta(days=self.deadline_days))
        return intake_at

    def _intake(self, at: datetime, referral_event_id: str) -> None:
        rng = self.rng
        self.plan("IntakeCompleted", at, "case_management",
                  referral_event_id=referral_event_id if rng.random() < 0.85 else None,
                  intake_site=rng.choice(AREAS) + " drop-in",
                  preferred_name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                  date_of_birth=date(rng.randint(1960, 2003), rng.randint(1, 12),
                                     rng.randint(1, 28)),
                  phone=f"555-01{rng.randint(0, 99):02d}")
        self.plan("CaseManagerAssigned", at, "case_management",
                  case_manager=self._case_manager, agency=None)
        self.plan("IdentifierLinked", at, "case_management",
                  partner=self.cast.partner("case_management") or "",
                  local_id=f"CM-{rng.randint(10000, 99999)}")
        self._standard_consent(at)
        needs = [n for n, p in (("HOUSING", 0.75), ("SUD_TREATMENT", 0.45),
                                ("MENTAL_HEALTH", 0.35), ("BENEFITS", 0.6),
                                ("EMPLOYMENT", 0.3)) if rng.random() < p]
        assessed = self._after(at, 2, 14)
        self.plan("AssessmentCompleted", assessed, "case_management",
                  assessment_tool="LEAD needs assessment",
                  acuity=rng.choice(("LOW", "MODERATE", "HIGH")), needs=needs)
        self.plan("HousingStatusChanged", at, "case_management",
                  status=rng.choice(("UNSHELTERED", "UNSHELTERED", "EMERGENCY_SHELTER")),
                  provider=None)
        for need in needs:
            self._service(need, self._after(assessed, 1, 40))

    def _standard_consent(self, at: datetime) -> None:
        """The program's release: care coordination among non-clinical partners."""
        rng = self.rng
        recipients = ["role:case_management", "role:housing", "role:defender", "role:coordinator"]
        exceptions = ([{"recipients": ["role:defender"], "categories": ["CONTACT"]}]
                      if rng.random() < 0.1 else [])
        consent_id = self._grant(at, recipients,
                                 ["HOUSING", "BENEFITS", "EMPLOYMENT", "CONTACT", "PROGRAM_STATUS"],
                                 365, part2=False, exceptions=exceptions)
        if rng.random() < 0.08:
            revoked = self._after(at, 10, 200)
            self.plan("ConsentRevoked", revoked, "case_management", consent_id=consent_id)
            if rng.random() < 0.5:
                self._grant(self._after(revoked, 3, 30), ["role:case_management", "role:housing"],
                            ["HOUSING", "PROGRAM_STATUS"], 180, part2=False, exceptions=[])

    def _grant(self, at: datetime, recipients: list[str], categories: list[str],
               days: int | None, *, part2: bool, exceptions: list[dict[str, list[str]]],
               disclosing_programs: list[str] | None = None,
               expires_on_event: str | None = None) -> str:
        """Plan a ConsentGranted (version 2) expiring after ``days`` (None: no date)."""
        consent_id = f"{self.participant_id}-c{len(self._consents) + 1}"
        self._consents.append(consent_id)
        form = hashlib.sha256(f"signed form {consent_id}".encode()).hexdigest()
        self.plan("ConsentGranted", at, "case_management",
                  consent_id=consent_id, recipients=recipients, categories=categories,
                  purposes=CONSENT_PURPOSES + (["treatment"] if part2 else []),
                  valid_from=at, expires_at=None if days is None else at + timedelta(days=days),
                  exceptions=exceptions, part2=part2,
                  disclosing_programs=disclosing_programs or [],
                  expires_on_event=expires_on_event, form_sha256=form)
        return consent_id

    def _part2_consent(self, at: datetime, recipients: list[str]) -> None:
        """A 42 CFR Part 2 consent (§ 2.31) opening SUD treatment records to ``recipients``.

        The disclosing programs are the SUD program and the case manager (for the SUD data it
        records itself, such as its referral to treatment): a Part 2 record opens only under a
        consent naming its source. It ends after 180 days, or for some participants at their
        program exit.
        """
        disclosers = [partner for partner in (self.cast.partner("sud_treatment"),
                                              self.cast.partner("case_management")) if partner]
        on_exit = self.rng.random() < 0.3
        self._grant(at, recipients, ["SUD_TREATMENT"], None if on_exit else 180, part2=True,
                    exceptions=[], disclosing_programs=disclosers,
                    expires_on_event="PROGRAM_EXIT" if on_exit else None)

    def _service(self, need: str, at: datetime) -> None:
        rng = self.rng
        provider_role = {"HOUSING": "housing", "SUD_TREATMENT": "sud_treatment",
                         "MENTAL_HEALTH": "mental_health"}.get(need, "case_management")
        if self.cast.partner(provider_role) is None:
            provider_role = "case_management"
        provider = (self.cast.partner(provider_role) or "") if provider_role != "case_management" \
            else {"BENEFITS": "county DSHS office", "EMPLOYMENT": "WorkSource"}.get(need, "CM")
        service = need
        self.plan("ServiceReferralMade", at, "case_management", service_type=service,
                  provider=provider, notes=None)
        if need == "SUD_TREATMENT":
            recipients = [self.cast.partner("case_management") or "role:case_management"]
            if rng.random() < 0.4:
                recipients.append("role:defender")
            self._part2_consent(at, recipients)
        if need == "BENEFITS":
            self.plan("BenefitsEnrolled", self._after(at, 5, 40), "case_management",
                      program=rng.choice(("SNAP", "MEDICAID", "SSI")), effective_on=None)
            return
        if need == "EMPLOYMENT":
            self.plan("EmploymentStatusChanged", self._after(at, 20, 120), "case_management",
                      status=rng.choice(("PART_TIME", "IN_TRAINING", "TEMPORARY")), employer=None)
            return
        if rng.random() < 0.25:
            return  # referred, never enrolled
        enrolled = self._after(at, 1, 21)
        self.plan("ServiceEnrolled", enrolled, provider_role, service_type=service,
                  provider=provider, program=None)
        weeks = rng.randint(2, 30)
        for week in range(weeks):
            self.plan("ServiceEncounter", self._after(enrolled + week * WEEK, 0, 6), provider_role,
                      service_type=service, provider=provider,
                      duration_minutes=rng.choice((30, 45, 50, 60)), notes=None)
        if need == "HOUSING":
            self.plan("HousingStatusChanged", self._after(enrolled, 0, 3), provider_role,
                      status=rng.choice(("TRANSITIONAL", "PERMANENT_SUPPORTIVE", "RENTAL")),
                      provider=provider)
        if rng.random() < 0.6:
            self.plan("ServiceExited", enrolled + weeks * WEEK, provider_role,
                      service_type=service, provider=provider,
                      outcome=rng.choice(("COMPLETED", "COMPLETED", "WITHDREW", "LOST_CONTACT")))

    def _legal_case(self, intake_at: datetime, *, late: bool) -> None:
        rng = self.rng
        case_number = f"{intake_at.year % 100:02d}-1-{rng.randint(10000, 99999)}-SEA"
        if rng.random() < 0.6:
            self.plan("DefenderAssigned", self._after(intake_at, 1, 10), "defender",
                      attorney=rng.choice(STAFF), office=None)
        if late and rng.random() < 0.5:
            self._charges_filed(intake_at - DAY, missed=True)
            return
        self.plan("ChargesDeclined", self._after(intake_at, 60, 200), "prosecutor",
                  case_number=case_number, reason="LEAD_PARTICIPATION")

    def _charges_filed(self, due: datetime, *, missed: bool) -> None:
        rng = self.rng
        case_number = f"{due.year % 100:02d}-1-{rng.randint(10000, 99999)}-SEA"
        filed = self._after(due, 1, 10)
        self.plan("ChargesFiled", filed, "prosecutor", case_number=case_number,
                  charges=[f"RCW {rng.randint(9, 69)}"], after_missed_intake=missed)
        self.plan("DefenderAssigned", self._after(filed, 0.5, 5), "defender",
                  attorney=rng.choice(STAFF), office=None)
        hearing = self._after(filed, 14, 60)
        self.plan("CourtDateSet", self._after(filed, 1, 7), "prosecutor", case_number=case_number,
                  court="County District Court", hearing_type="arraignment", scheduled_at=hearing)
        self.plan("CaseResolved", self._after(hearing, 0, 90), "defender", case_number=case_number,
                  disposition=rng.choice(("DISMISSED", "DIVERTED", "PLEA")))

    def _exit_time(self, engaged_from: datetime) -> datetime:
        rng = self.rng
        if rng.random() < 0.35:
            exit_at = self._after(engaged_from, 60, 400)
            reason = rng.choice(("GRADUATED", "LOST_CONTACT", "VOLUNTARY_WITHDRAWAL",
                                 "MOVED_AWAY", "INCARCERATED"))
            self.plan("ParticipantExited", exit_at, "case_management", reason=reason)
            return exit_at
        return self.end

    def _week(self, week: datetime) -> None:
        """Plan one week of case management: one to three contacts."""
        rng = self.rng
        for _ in range(rng.choice((1, 1, 2, 3))):
            successful = rng.random() < 0.75
            self.plan("ContactLogged", self._after(week, 0, 6.9), "case_management",
                      contact_method=rng.choice(("IN_PERSON", "IN_PERSON", "OUTREACH", "PHONE",
                                                 "TEXT")),
                      successful=successful,
                      duration_minutes=rng.choice((10, 20, 30, 45)) if successful else None)
