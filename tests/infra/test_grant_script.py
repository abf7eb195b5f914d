"""infra/scripts/grant-graph-permissions.sh against a stand-in `az` (no network, no tenant)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA

SCRIPT = INFRA / "scripts" / "grant-graph-permissions.sh"
PRINCIPAL = "11111111-2222-4333-8444-555555555555"
GRAPH_SP = "99999999-0000-4000-8000-000000000000"
ROLES = {
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    "GroupMember.Read.All": "98830695-27a2-44f7-8c18-0c3ebc9698f6",
    "Group.Read.All": "5b567255-7703-4780-807c-7be8301ae99b",
    "IdentityRiskyUser.Read.All": "dc5007c0-2d7d-4c42-879c-2dab87571379",
    "IdentityRiskEvent.Read.All": "6e472fd1-ad78-48da-a0f0-97ab2c6b769e",
    "Directory.Read.All": "7ab1d382-f21e-4acd-a863-ba3e13f7da61",
    "Mail.Send": "b633e1c5-b582-4048-a93e-9f11b44c7e96",
}
NEEDED = ["User.Read.All", "Group.Read.All", "IdentityRiskyUser.Read.All", "IdentityRiskEvent.Read.All"]

FAKE_AZ = """#!/usr/bin/env bash
# Stand-in for the Azure CLI: answers the three look-ups and logs every POST body.
set -euo pipefail
args="$*"
case "$args" in
  "ad sp show --id 00000003-0000-0000-c000-000000000000 --query id --output tsv")
    echo "$FAKE_GRAPH_SP" ;;
  "ad sp show --id 00000003-0000-0000-c000-000000000000 --query appRoles"*)
    printf '%s' "$FAKE_ROLES" ;;
  "rest --method GET"*)
    printf '%s' "$FAKE_ASSIGNED" ;;
  "rest --method POST"*)
    for ((i = 1; i <= $#; i++)); do
      if [[ "${!i}" == "--body" ]]; then j=$((i + 1)); echo "${!j}" >>"$FAKE_POSTS"; fi
    done ;;
  *) echo "unexpected az call: $args" >&2; exit 9 ;;
esac
"""


def _run(tmp_path: Path, assigned: list[str], *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(0o755)
    posts = tmp_path / "posts.log"
    posts.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
        "FAKE_GRAPH_SP": GRAPH_SP,
        "FAKE_ROLES": "".join(f"{role_id}\t{name}\n" for name, role_id in ROLES.items()),
        "FAKE_ASSIGNED": "".join(f"{ROLES[name]}\n" for name in assigned),
        "FAKE_POSTS": str(posts),
    }
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result, [line for line in posts.read_text().splitlines() if line]


def test_grants_exactly_the_four_permissions(tmp_path: Path) -> None:
    result, posts = _run(tmp_path, [])
    assert result.returncode == 0, result.stderr
    granted = {role for role, role_id in ROLES.items() for body in posts if role_id in body}
    assert granted == set(NEEDED)
    assert all(PRINCIPAL in body and GRAPH_SP in body for body in posts)


def test_mail_send_is_granted_only_when_asked(tmp_path: Path) -> None:
    result, posts = _run(tmp_path, NEEDED, "--mail-send")
    assert result.returncode == 0, result.stderr
    assert [role for role, role_id in ROLES.items() for body in posts if role_id in body] == ["Mail.Send"]
    assert "note:" not in result.stderr  # held after the grant: not reported as beyond the list
    again, none = _run(tmp_path, [*NEEDED, "Mail.Send"])
    assert none == [] and "Mail.Send, which entra-sync does not need" in again.stderr  # not asked: reported


def test_running_again_changes_nothing(tmp_path: Path) -> None:
    result, posts = _run(tmp_path, NEEDED)
    assert result.returncode == 0, result.stderr
    assert posts == []
    assert result.stdout.count("already granted") == 4


def test_group_member_read_all_alone_is_not_enough_for_group_subscriptions(tmp_path: Path) -> None:
    have = ["User.Read.All", "GroupMember.Read.All", "IdentityRiskyUser.Read.All", "IdentityRiskEvent.Read.All"]
    result, posts = _run(tmp_path, have)
    assert result.returncode == 0, result.stderr
    assert len(posts) == 1
    assert ROLES["Group.Read.All"] in posts[0]
    assert "GroupMember.Read.All" in result.stderr  # reported as more than needed, never revoked


def test_extra_permissions_are_reported_not_revoked(tmp_path: Path) -> None:
    result, posts = _run(tmp_path, [*NEEDED, "Directory.Read.All"])
    assert result.returncode == 0, result.stderr
    assert posts == []
    assert "Directory.Read.All" in result.stderr


def test_dry_run_grants_nothing(tmp_path: Path) -> None:
    result, posts = _run(tmp_path, [], "--dry-run")
    assert result.returncode == 0, result.stderr
    assert posts == [] and result.stdout.count("would grant") == 4


@pytest.mark.parametrize("principal", ["", "not-a-guid"])
def test_refuses_without_a_valid_principal(tmp_path: Path, principal: str) -> None:
    result, posts = _run(tmp_path, [], "--principal-id", principal)
    assert result.returncode == 2 and posts == []
