"""Audiences, recipients and the shape of a view (policy/_view.py)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from datetime import datetime

import pytest

from policy import (
    BundleRejected,
    Directory,
    PolicyError,
    Submission,
    Tlp,
    View,
    evaluate,
    evaluate_all,
    recipients,
)

from ._support import (
    KEY,
    NOW,
    TLP1,
    TLP2,
    Stix,
    assert_valid_stix,
    bundle,
    decision_for,
    ids_of,
)

ViewFor = Callable[..., View]


class TestRecipients:
    def test_subscribers_and_named_when_submission_names_orgs_and_groups(
        self, directory: Directory
    ) -> None:
        submission = Submission(
            originator="bank-a",
            submission_id="s",
            named=frozenset({"outsider"}),
            named_groups=frozenset({"lea"}),
        )
        assert recipients(directory, submission) == {
            "bank-b",
            "vendor-c",
            "lea-1",
            "lea-2",
            "outsider",
        }

    def test_originator_and_auditors_left_out_when_they_follow_everyone(
        self, directory: Directory
    ) -> None:
        submission = Submission(
            originator="bank-b",
            submission_id="s",
            named=frozenset({"bank-b", "auditor"}),
            named_groups=frozenset({"banks"}),
        )
        assert recipients(directory, submission) == {"bank-a", "lea-1", "lea-2"}

    def test_unknown_orgs_and_groups_ignored_when_named(self, directory: Directory) -> None:
        submission = Submission(
            originator="vendor-c",
            submission_id="s",
            named=frozenset({"nobody"}),
            named_groups=frozenset({"no-group"}),
        )
        assert recipients(directory, submission) == {"bank-b", "lea-1"}

    def test_feed_subscribers_included_when_submission_has_feed(self, directory: Directory) -> None:
        submission = Submission(originator="vendor-c", submission_id="s", feed="ioc")
        assert recipients(directory, submission) == {"bank-b", "lea-1", "outsider"}

    def test_raises_when_originator_unknown(self, directory: Directory) -> None:
        with pytest.raises(PolicyError, match="originator"):
            recipients(directory, Submission(originator="ghost", submission_id="s"))


class TestAudience:
    def test_clear_reaches_everyone_when_subscribed(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("clear")
        for recipient in ("bank-b", "lea-1", "lea-2", "outsider"):
            assert ids_of(view_for(bundle(ind), recipient)) == {ind["id"]}

    def test_tlp1_white_read_as_clear(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator(None, object_marking_refs=[TLP1["white"]])
        view = view_for(bundle(ind), "outsider")
        assert ids_of(view) == {ind["id"]}
        assert view.tlp is Tlp.CLEAR

    def test_tlp1_amber_read_as_amber_not_strict_when_named_through_group(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator(None, object_marking_refs=[TLP1["amber"]])
        view = view_for(bundle(ind), "lea-1", named_groups={"lea"})
        assert ids_of(view) == {ind["id"]}
        assert view.tlp is Tlp.AMBER

    def test_green_reaches_members_when_in_community(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("green")
        assert ids_of(view_for(bundle(ind), "bank-b")) == {ind["id"]}

    def test_green_withheld_when_partner_and_community_excludes_partners(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("green")
        view = view_for(bundle(ind), "lea-1")
        assert view.bundle is None
        assert decision_for(view, ind).reason == "tlp-audience"

    def test_green_reaches_partner_when_community_includes_partners(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        ind = stix.indicator("green")
        directory = make_directory(community={"partners_in_community": True})
        assert ids_of(view_for(bundle(ind), "lea-1", directory=directory)) == {ind["id"]}

    def test_green_withheld_when_partner_outside_community_even_if_partners_included(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        ind = stix.indicator("green")
        directory = make_directory(community={"partners_in_community": True})
        assert view_for(bundle(ind), "lea-2", directory=directory).bundle is None

    def test_green_withheld_when_member_outside_community(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        assert view_for(bundle(stix.indicator("green")), "outsider").bundle is None

    def test_green_reaches_nobody_unnamed_when_originator_outside_community(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("green")
        assert view_for(bundle(ind), "bank-b", originator="outsider").bundle is None
        named = view_for(bundle(ind), "bank-b", originator="outsider", named={"bank-b"})
        assert ids_of(named) == {ind["id"]}

    def test_green_reaches_named_org_when_outside_community(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("green")
        assert ids_of(view_for(bundle(ind), "outsider", named={"outsider"})) == {ind["id"]}

    def test_amber_reaches_group_members_when_group_named(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("amber")
        assert ids_of(view_for(bundle(ind), "lea-2", named_groups={"lea"})) == {ind["id"]}

    def test_amber_withheld_when_nobody_named(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("amber")
        view = view_for(bundle(ind), "bank-b")
        assert view.bundle is None
        assert decision_for(view, ind).reason == "tlp-audience"

    def test_amber_strict_withheld_when_named_only_through_group(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("amber+strict")
        view = view_for(bundle(ind), "lea-1", named_groups={"lea"})
        assert view.bundle is None
        assert decision_for(view, ind).reason == "tlp-audience"

    def test_amber_strict_reaches_org_when_named_one_by_one(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("amber+strict")
        assert ids_of(view_for(bundle(ind), "lea-1", named={"lea-1"})) == {ind["id"]}

    def test_red_reaches_recipient_when_named(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("red")
        view = view_for(bundle(ind), "lea-1", named={"lea-1"})
        assert ids_of(view) == {ind["id"]}
        assert view.tlp is Tlp.RED

    def test_red_not_named_when_nobody_named(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("red")
        for recipient in ("bank-b", "lea-1", "vendor-c"):
            view = view_for(bundle(ind), recipient)
            assert view.bundle is None
            assert decision_for(view, ind).reason == "red-not-named"

    def test_red_not_named_when_only_another_org_named(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("red")
        view = view_for(bundle(ind), "bank-b", named={"lea-1"}, named_groups={"banks"})
        assert decision_for(view, ind).reason == "red-not-named"

    def test_several_tlp_markings_take_strictest(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], TLP1["amber"]])
        assert view_for(bundle(ind), "bank-b").bundle is None
        view = view_for(bundle(ind), "bank-b", named_groups={"banks"})
        assert ids_of(view) == {ind["id"]}
        assert decision_for(view, ind).tlp is Tlp.AMBER

    def test_unmarked_takes_amber_when_originator_declares_no_default(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator(None)
        view = view_for(bundle(ind), "bank-b")
        assert view.bundle is None
        assert decision_for(view, ind).tlp is Tlp.AMBER

    def test_unmarked_takes_originator_default_when_declared(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        ind = stix.indicator(None)
        directory = make_directory(org_changes={"bank-a": {"default_tlp": "green"}})
        view = view_for(bundle(ind), "bank-b", directory=directory)
        assert ids_of(view) == {ind["id"]}
        assert decision_for(view, ind).tlp is Tlp.GREEN

    def test_auditor_receives_nothing_when_evaluated(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("clear")
        view = view_for(bundle(ind), "auditor", named={"auditor"})
        assert view.bundle is None
        assert [d.reason for d in view.decisions] == ["auditor"]
        assert view.withheld == 1

    def test_raises_when_recipient_is_originator(self, stix: Stix, view_for: ViewFor) -> None:
        with pytest.raises(PolicyError, match="originator"):
            view_for(bundle(stix.indicator()), "bank-a")

    def test_raises_when_recipient_unknown(self, stix: Stix, view_for: ViewFor) -> None:
        with pytest.raises(PolicyError, match="recipient"):
            view_for(bundle(stix.indicator()), "ghost")

    def test_raises_when_originator_unknown(self, stix: Stix, view_for: ViewFor) -> None:
        with pytest.raises(PolicyError, match="originator"):
            view_for(bundle(stix.indicator()), "bank-b", originator="ghost")

    def test_raises_when_now_is_naive(self, stix: Stix, directory: Directory) -> None:
        with pytest.raises(PolicyError, match="timezone"):
            evaluate(
                bundle(stix.indicator()),
                directory=directory,
                submission=Submission(originator="bank-a", submission_id="s"),
                recipient="bank-b",
                now=datetime(2024, 1, 1),
                digest_key=KEY,
            )


class TestViewShape:
    def test_bundle_id_is_uuid5_of_submission_and_recipient(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        first = view_for(bundle(stix.indicator()), "bank-b", submission_id="sub-9")
        again = view_for(bundle(stix.indicator()), "bank-b", submission_id="sub-9")
        other = view_for(bundle(stix.indicator()), "lea-1", submission_id="sub-9")
        assert first.bundle is not None and again.bundle is not None
        assert other.bundle is not None
        assert first.bundle["id"] == again.bundle["id"]
        assert first.bundle["id"] != other.bundle["id"]
        assert uuid.UUID(first.bundle["id"].removeprefix("bundle--")).version == 5

    def test_view_is_none_when_bundle_empty(self, view_for: ViewFor) -> None:
        view = view_for({"type": "bundle", "id": "bundle--" + str(uuid.uuid4())}, "bank-b")
        assert view.bundle is None
        assert view.decisions == ()
        assert (view.delivered, view.withheld, view.derived, view.tlp) == (0, 0, 0, None)

    def test_view_is_valid_stix_when_objects_delivered(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("green")
        mal = stix.malware("clear")
        rel = stix.relationship(ind, mal, "green")
        view = view_for(bundle(ind, mal, rel), "bank-b")
        assert ids_of(view) == {ind["id"], mal["id"], rel["id"]}
        assert_valid_stix(view)

    def test_decisions_carry_keyed_digest_never_raw_id(self, stix: Stix, view_for: ViewFor) -> None:
        ip = stix.ipv4("198.51.100.7", "red")
        view = view_for(bundle(ip), "bank-b")
        (decision,) = view.decisions
        expected = hmac.new(KEY, f"{ip['id']}|".encode(), hashlib.sha256).hexdigest()
        assert decision.object_digest == expected
        assert ip["id"] not in repr(view.decisions)
        assert decision.object_type == "ipv4-addr"
        assert (decision.action, decision.reason, decision.tlp) == (
            "withheld",
            "red-not-named",
            Tlp.RED,
        )

    def test_decisions_sorted_by_digest_when_many(self, stix: Stix, view_for: ViewFor) -> None:
        objects = [stix.indicator(level) for level in TLP2]
        view = view_for(bundle(*objects), "bank-b")
        digests = [d.object_digest for d in view.decisions]
        assert digests == sorted(digests)
        assert len(digests) == 5

    def test_counts_per_tlp_when_mixed_levels(self, stix: Stix, view_for: ViewFor) -> None:
        objects = [stix.indicator(level) for level in TLP2]
        view = view_for(bundle(*objects), "bank-b", named_groups={"banks"})
        assert (view.delivered, view.withheld, view.derived) == (3, 2, 0)
        assert view.delivered_by_tlp == {"clear": 1, "green": 1, "amber": 1}
        assert view.withheld_by_tlp == {"amber+strict": 1, "red": 1}
        assert view.derived_by_tlp == {}
        assert view.tlp is Tlp.AMBER

    def test_view_independent_of_object_order_when_shuffled(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("green")
        mal = stix.malware("amber")
        rel = stix.relationship(ind, mal, "green")
        forward = view_for(bundle(ind, mal, rel), "bank-b")
        backward = view_for(bundle(rel, mal, ind), "bank-b")
        assert forward == backward

    def test_delivered_objects_sorted_by_id_and_modified(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        objects = [stix.indicator("clear") for _ in range(5)]
        view = view_for(bundle(*reversed(objects)), "bank-b")
        assert view.bundle is not None
        ids = [o["id"] for o in view.bundle["objects"]]
        assert ids == sorted(ids)


class TestEvaluateAll:
    def test_views_match_evaluate_when_many_recipients(
        self, stix: Stix, directory: Directory
    ) -> None:
        ind = stix.indicator("green")
        red = stix.indicator("red")
        mal = stix.malware("amber")
        rel = stix.relationship(ind, mal, "amber")
        data = bundle(ind, red, mal, rel)
        submission = Submission(
            originator="bank-a",
            submission_id="s-all",
            named=frozenset({"lea-1"}),
            named_groups=frozenset({"banks"}),
        )
        who = recipients(directory, submission)
        views = evaluate_all(
            data,
            directory=directory,
            submission=submission,
            recipients=who,
            now=NOW,
            digest_key=KEY,
        )
        assert sorted(views) == sorted(who)
        for recipient, view in views.items():
            assert view == evaluate(
                data,
                directory=directory,
                submission=submission,
                recipient=recipient,
                now=NOW,
                digest_key=KEY,
            )
        assert ids_of(views["lea-1"]) == {ind["id"], red["id"], mal["id"], rel["id"]}
        assert ids_of(views["bank-b"]) == {ind["id"], mal["id"], rel["id"]}
        assert ids_of(views["vendor-c"]) == {ind["id"]}

    def test_received_before_passed_per_recipient(self, stix: Stix, directory: Directory) -> None:
        revoked = stix.indicator("amber", revoked=True)
        submission = Submission(originator="bank-a", submission_id="s-rev")
        views = evaluate_all(
            bundle(revoked),
            directory=directory,
            submission=submission,
            recipients=["bank-b", "vendor-c"],
            now=NOW,
            digest_key=KEY,
            received_before={"bank-b": {revoked["id"]: Tlp.AMBER}},
        )
        assert ids_of(views["bank-b"]) == {revoked["id"]}
        assert views["vendor-c"].bundle is None

    def test_raises_bundle_rejected_when_bundle_malformed(self, directory: Directory) -> None:
        with pytest.raises(BundleRejected):
            evaluate_all(
                {"type": "bundle", "objects": [1]},
                directory=directory,
                submission=Submission(originator="bank-a", submission_id="s"),
                recipients=["bank-b"],
                now=NOW,
                digest_key=KEY,
            )
