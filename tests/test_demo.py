"""The README's first command runs the whole main job on the sandbox and shows the result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_plays_the_scripted_day_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "demo", "--users", "40", "--groups", "4", "--seed", "3"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Subscriptions: users, groups created with the validation handshake" in out
    assert "(3 existing ones linked, not duplicated)" in out
    assert "the SCIM application holds 37 users (2 existing ones adopted by userName, not duplicated), 2 groups" in out
    scim = re.findall(r"SCIM: grace\.hopper@sandbox\.onmicrosoft\.com (\w+), groups (.*)", out)
    assert scim == [
        ("active", "Staff"),  # hired: created and pushed into Staff
        ("active", "Sales, Staff"),  # promoted: joins Sales
        ("active", "Sales, Staff"),  # email change: same resource
        ("inactive", "Sales, Staff"),  # leaver: active=false
        ("active", "Sales, Staff"),  # re-enabled
        ("inactive", "Sales, Staff"),  # soft-deleted: active=false per the policy
    ], scim
    assert "Done: deactivated the SCIM crm account" in out
    steps = ("1. Hire", "2. Promotion", "3. Email change", "4. Disable (leaver)", "5. Re-enable", "6. Delete (soft)")
    for step in steps:
        assert step in out
    assert "failed 0" in out
    assert "Audit trail for Grace Hopper" in out
    assert "welcome: password-change ticket http://127.0.0.1:" in out  # the hire's day one in Auth0
    assert "mailed to grace.hopper@sandbox.example (valid 7 days); organization acme, roles Employee" in out
    assert "revoke_refresh_tokens" in out
    assert "7. Risky sign-in: high risk for" in out
    assert "blocked, 2 sessions and 1 refresh token revoked, 1 message" in out
    # The mapping's alerts: section routes the risk to Slack (Block Kit) and the security mailbox.
    assert out.count("Slack (slack, Block Kit) received") == 1
    assert re.search(r"\| HIGH sign-in risk for .+ \(.+@sandbox\.onmicrosoft\.com\)\n +\| Event \| risk\n", out)
    assert "| Done: blocked the Auth0 account; revoked all sessions; revoked all refresh tokens" in out
    mail = r"Email from entra-sync@sandbox\.example to secops@sandbox\.example: \[entra-sync\] \[high\] HIGH sign-in"
    assert re.search(mail, out)
    assert "8. Nightly reconciliation" in out
    assert "drift: attribute_mismatch 2, stale 1; 2 repaired through the worker" in out
    assert "both repaired: yes; a second (dry) run finds 0 repairable differences" in out
    assert "ServiceNow INC0010001: entra-sync: 1 stale finding(s) in auth0" in out  # reported, for a person
    assert re.search(r"Jira IAM-1: entra-sync: 1 stale finding\(s\) in auth0", out)
    # The day's effective changes reached the event endpoint signed (it refuses anything else), each id once.
    feed = re.search(r"13\. Event feed: the day as CloudEvents +\d+ ms +(\d+) posted, signed; the endpoint holds (\d+)",
                     out)  # fmt: skip
    assert feed is not None and int(feed.group(1)) == int(feed.group(2)) > 100, out[-3000:]
    # Entra provisioning pushes through the inbound endpoint: the user reaches Auth0 and the SCIM app.
    assert re.search(r"Entra provisioning pushes to http://127\.0\.0\.1:\d+/api/scim/hr-push/v2\?aadOptscim062020", out)
    assert re.search(r"9\. Push: Ada Lovelace, member of Research +\d+ ms +auth0:hr account auth0\|", out)
    assert re.search(r'10\. Push: Ada disabled \("active": "False"\) +\d+ ms +auth0:hr account blocked', out)
    pushed = re.findall(r"SCIM: ada\.lovelace@hr\.example (\w+), groups (.*)", out)
    assert pushed == [("active", "Research"), ("inactive", "Research")], pushed
    # Salesforce: a sales hire with the profile, role and permission sets his groups give; a leaver
    # deactivated, his permission sets off and his open records reassigned.
    assert re.search(
        r"11\. Hire: Linus Pauling joins Sales +\d+ ms +linus\.pauling@sandbox\.example, alias lpauling, "
        r"profile Sales User, role Sales Rep",
        out,
    )
    assert "permission sets Chatter_Access, Sales_Cloud_User; manager " in out
    assert re.search(
        r"12\. Leaver: Linus Pauling is disabled +\d+ ms +deactivated; open records to his manager: "
        r"3 opportunities, 2 leads, 1 case;",
        out,
    )
    assert "permission sets left: none" in out
    assert re.search(r"Salesforce API calls +\d+ +\(.*collections\.update \d+", out)
    report = re.search(r"report: (\S+\.html)", out)
    assert report is not None
    page = Path(report.group(1)).read_text()
    assert "Reconciliation run" in page
    assert "Renamed By Hand" in page
