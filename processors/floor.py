"""The golden-rule floor: what no site file and no consent can ever open.

LEAD's Golden Rule: no participant may be worse off for being in LEAD, and what is learned
through care coordination is never a basis for enforcement. So police and prosecutors never
receive treatment or health data — not with consent, not by site policy. The floor is code,
checked on every decision; a site file that tries to loosen it is rejected when loaded.
"""

from __future__ import annotations

#: Roles that act on enforcement and so never see health data.
ENFORCEMENT_ROLES: frozenset[str] = frozenset({"police", "prosecutor"})
#: Categories that enforcement roles never see, as fields or as the fact an event happened.
HEALTH_CATEGORIES: frozenset[str] = frozenset({"SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"})


def floor_forbids(role: str, category: str) -> bool:
    """Return True if the floor forbids ``role`` any data of ``category``, whatever else says."""
    return role in ENFORCEMENT_ROLES and category in HEALTH_CATEGORIES
