"""Every writer checks the store's disk budget before it writes (core/app/budget.py): suspected-group
discovery too, not only uploads and repairs."""

from __future__ import annotations

import pytest

from core.app import budget, compute, projects
from core.app.budget import BudgetError
from core.app.suspected_groups import discovery_dir
from tests.wb_helpers import ALICE, make_accounts, open_demo_here


@pytest.fixture()
def store(home):
    s = projects.get_store(home)
    make_accounts(s)
    return s


def test_discovery_is_refused_before_it_writes_when_the_budget_is_spent(store, monkeypatch):
    pid = open_demo_here(store, ALICE)
    p = store.project(pid)
    payload = {"model_id": p["base_model_id"], "dataset_id": p["eval_dataset_id"]}
    used = budget.store_usage(store)["used"]
    limit = {"budget": used + 1024}  # the store as it is, and a KB to spare
    monkeypatch.setattr(budget, "store_usage", lambda store: {"used": used, "budget": limit["budget"]})
    with pytest.raises(BudgetError, match="suspected groups needs about .*disk budget"):
        compute.discover(store, payload, ALICE)
    out = discovery_dir(store, p["base_model_id"], p["eval_dataset_id"])
    assert not any(out.parent.glob(out.name + "*"))  # nothing written, not even the temporary folder
    limit["budget"] = used + 2**30
    assert compute.discover(store, payload, ALICE)["path"] == str(out)
