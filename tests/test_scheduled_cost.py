"""What the scheduler's write-unit cuts (issue 16) must not cost: each test drives the path a cut
made cheaper into the failure that path must still survive, and checks what a user sees."""

from __future__ import annotations

import time

from tests.scheduled_helpers import Receiver, iso_in
from tests.test_scheduled_firing import create, shown


def _reconcile_later(seconds: float = 3600) -> dict:
    """A reconcile as it would run ``seconds`` from now (past the grace period by default)."""
    from chalicelib.delivery import reconciler

    return reconciler.reconcile(now=time.time() + seconds).__dict__


def test_a_firing_whose_worker_died_before_its_delivery_is_found_by_the_reconciler(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """Starting a firing no longer moves the callback's ``by_open`` entry: the entry, due at the
    firing's time, is still what leads the reconciler to a firing that started and was lost."""
    from chalicelib.delivery import scheduled

    owner = make_tenant()
    receiver = Receiver(httpserver)
    made = create(client, owner, receiver.url, iso_in(1))

    def dies(record, firing):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(scheduled, "_run_first_attempt", dies)
    time.sleep(1.2)
    worker.poll()
    worker.sqs.purge_queue(QueueUrl=worker.work_url)  # and its message never comes back
    monkeypatch.undo()
    assert shown(client, owner, made["callback_id"])["state"] == "firing"
    assert _reconcile_later(seconds=1)["firings_repaired"] == 0  # not overdue yet
    assert _reconcile_later()["firings_repaired"] == 1
    worker.run_until_idle()
    assert len(receiver.requests) == 1
    assert shown(client, owner, made["callback_id"])["state"] == "completed"
