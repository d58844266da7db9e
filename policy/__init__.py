"""Pure dissemination rules: TLP markings, the community directory, per-recipient views.

The router calls ``recipients`` for a submission, then ``evaluate_all`` (or ``evaluate`` for
one recipient) to get each recipient's ``View``: a valid STIX 2.1 bundle holding only what
that recipient is entitled to, and one ``Decision`` per input object for the log (keyed
digests and reason codes, never content). ``version_digests`` feeds the router's check that
an (id, modified) never comes back with different content. Nothing here does I/O or reads
the clock. The rules and every judgement call are written out in the docstrings of
``_markings`` (which markings are trusted), ``_bundle`` (bundle shape, versions,
inheritance from containers), ``_closure`` (clearance and the reference closure),
``_derive`` (derived copies) and ``_view`` (audiences, view shape, reason codes).
"""

from ._directory import (
    BrokerIdentity,
    Community,
    Directory,
    Group,
    Organisation,
    OrgKind,
    PublicKeyEntry,
    StatementRule,
    Subscription,
)
from ._errors import BundleRejected, DirectoryError, PolicyError
from ._markings import selector_resolves
from ._observables import id_problem as observable_id_problem
from ._observables import is_observable
from ._tlp import Tlp
from ._view import (
    Decision,
    Submission,
    View,
    authors,
    evaluate,
    evaluate_all,
    normal_timestamp,
    recipients,
    version_digests,
)

__all__ = [
    "BrokerIdentity",
    "BundleRejected",
    "Community",
    "Decision",
    "Directory",
    "DirectoryError",
    "Group",
    "OrgKind",
    "Organisation",
    "PolicyError",
    "PublicKeyEntry",
    "StatementRule",
    "Submission",
    "Subscription",
    "Tlp",
    "View",
    "authors",
    "evaluate",
    "evaluate_all",
    "is_observable",
    "normal_timestamp",
    "observable_id_problem",
    "recipients",
    "selector_resolves",
    "version_digests",
]
