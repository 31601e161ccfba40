"""The heap frozen around a per-model dbt call: frozen for the call, collectable again after it."""

from __future__ import annotations

import gc

from governed_marketing.orchestration.dbt_tasks import DBT_GLOBAL_FLAGS, freeze_heap, unfreeze_heap


def test_the_heap_is_frozen_for_the_call_and_thawed_after_it():
    gc.unfreeze()
    freeze_heap({})
    try:
        assert gc.get_freeze_count() > 0
    finally:
        unfreeze_heap({}, None)
    assert gc.get_freeze_count() == 0


def test_a_failed_task_leaves_nothing_frozen_after_the_next_one():
    freeze_heap({})  # the task failed: no post_execute
    freeze_heap({})
    unfreeze_heap({}, None)
    assert gc.get_freeze_count() == 0


def test_the_flags_are_dbt_global_flags_that_keep_partial_parsing():
    from dbt.cli.main import cli

    known = {opt for param in cli.commands["build"].params for opt in param.opts + param.secondary_opts}
    assert set(DBT_GLOBAL_FLAGS) <= known
    assert "--no-partial-parse" not in DBT_GLOBAL_FLAGS
