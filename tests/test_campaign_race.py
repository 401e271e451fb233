"""The overlap rule under concurrency: DynamoDB's conditions decide, not a read-then-write."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from chalicelib.domain.campaign import RegistrationInput


def _spec(start: datetime, end: datetime | None) -> RegistrationInput:
    return RegistrationInput(
        event_type="race",
        campaign_id=None,
        destination_url="http://127.0.0.1:9/hook",
        destination_method="POST",
        content_type="application/json",
        start=start,
        end=end,
        backup_url=None,
    )


def _race(company_id: str, specs: list[RegistrationInput]) -> list[str]:
    from chalicelib.storage import campaign as store

    def create(spec: RegistrationInput) -> str:
        try:
            store.create_registration(company_id, spec, datetime.now(UTC))
        except store.OverlapConflict:
            return "409"
        return "201"

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        return list(pool.map(create, specs))


def test_fifty_overlapping_creates_have_exactly_one_winner(make_tenant, client):
    owner = make_tenant()
    base = datetime(2031, 1, 1, tzinfo=UTC)
    specs = [_spec(base + timedelta(hours=i), None) for i in range(50)]
    outcomes = _race(owner.tenant_id, specs)
    assert outcomes.count("201") == 1
    assert outcomes.count("409") == 49
    listed = client.http.get(
        f"/companies/{owner.tenant_id}/campaigns/config/callbacks", headers=owner.headers
    )
    assert len(listed.json_body) == 1


def test_fifty_disjoint_creates_all_win(make_tenant, client):
    owner = make_tenant()
    base = datetime(2031, 1, 1, tzinfo=UTC)
    specs = [_spec(base + timedelta(days=i), base + timedelta(days=i + 1)) for i in range(50)]
    outcomes = _race(owner.tenant_id, specs)
    assert outcomes == ["201"] * 50
    listed = client.http.get(
        f"/companies/{owner.tenant_id}/campaigns/config/callbacks", headers=owner.headers
    )
    assert len(listed.json_body) == 50
