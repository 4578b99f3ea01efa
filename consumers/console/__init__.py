"""The staff console: server-rendered pages over the staff API's queries (``leadhub serve``, ``/``).

Staff users sign in with a password (argon2id) and, where the site file requires it for their
role, a TOTP code; they choose their purpose of use once per session; every page they read is
accounted for on ``lead.audit.access`` exactly as a staff API read is, before it is shown.
Nothing here evaluates policy: pages show the caller's own rows of the view.
"""
