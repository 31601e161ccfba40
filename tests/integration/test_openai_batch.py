"""The Batch API transport through the real `openai` SDK, against the local server's Files and Batch API.

Each test drives the library (`generation.transports.batch`) with a DuckDB ledger in tmp_path, exactly as the
deferrable operator will: submit, poll, collect, resubmit; the vendor is the emulation in
tests/support/openai_batch_api.py.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest
from governed_marketing.generation import ledger
from governed_marketing.generation.base import FIRST_NAME_PLACEHOLDER, DraftRequest
from governed_marketing.generation.campaign import COHORT_ATTRIBUTES
from governed_marketing.generation.request import completion_body
from governed_marketing.generation.transports import batch
from governed_marketing.warehouse import connect as warehouse_connect

from tests.support.openai_batch_api import BatchAPI
from tests.support.openai_server import LocalOpenAIServer

pytestmark = pytest.mark.integration

CAMPAIGN = "spring_newsletter"
VERSION = "newsletter_v1@0badc0de"
MODEL = "gpt-4.1-mini"
PROVIDER = "openai"
SYSTEM_PROMPT = "You write short, friendly marketing emails for Example Shop."
BODY_KWARGS = {"max_body_chars": 1200, "max_output_tokens": 800, "temperature": 0.7}
DATA_BLOCK = re.compile(r"<cohort_data>\n(.*?)\n</cohort_data>", re.DOTALL)


def cost_of(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * 0.4 + output_tokens * 1.6) / 1_000_000 * 0.5


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = warehouse_connect(tmp_path / "warehouse.duckdb")
    yield connection
    connection.close()


@pytest.fixture
def client(openai_server: LocalOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=openai_server.base_url, api_key="sk-local-test-key", max_retries=0, timeout=10)


@pytest.fixture
def api(openai_server: LocalOpenAIServer) -> BatchAPI:
    return openai_server.batch_api


def _request(n: int, attributes: dict[str, str | None] | None = None) -> DraftRequest:
    unit_id = f"cohort-{n:03d}"
    return DraftRequest(
        campaign_id=CAMPAIGN,
        unit_id=unit_id,
        prompt_version=VERSION,
        system_prompt=SYSTEM_PROMPT,
        language="de",
        attributes=attributes or {"country": "DE", "lifecycle_stage": "customer", "interest": f"topic {n}"},
        custom_id=ledger.custom_id(CAMPAIGN, unit_id, VERSION, MODEL),
    )


def _planned(conn: duckdb.DuckDBPyConnection, count: int) -> list[DraftRequest]:
    requests = [_request(n) for n in range(count)]
    ledger.plan(conn, requests, model=MODEL, provider=PROVIDER, transport="batch", unit_kind="cohort", run_id="run-1")
    return requests


def _submit(conn, client, requests: list[DraftRequest], **kwargs: Any) -> str | None:
    return batch.submit(
        conn, client, requests, campaign_id=CAMPAIGN, model=MODEL, run_id="run-1", body_kwargs=BODY_KWARGS, **kwargs
    )


def _wait(client: openai.OpenAI, batch_id: str) -> list[str]:
    """Poll until terminal; the statuses seen on the way."""
    seen = []
    for _ in range(20):
        summary = batch.status(client, batch_id)
        seen.append(summary.status)
        if summary.terminal:
            return seen
    raise AssertionError(f"batch {batch_id} never became terminal: {seen}")


def _collect(conn, client, batch_id: str, requests: list[DraftRequest]) -> batch.CollectOutcome:
    return batch.collect(
        conn, client, batch_id, {r.custom_id: r for r in requests}, provider=PROVIDER, model=MODEL, cost_of=cost_of
    )


def _statuses(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str | None]]:
    rows = conn.execute("select custom_id, status, last_error_kind from ops.generation_ledger").fetchall()
    return {cid: (status, kind) for cid, status, kind in rows}


def _uploaded_custom_ids(api: BatchAPI, index: int) -> list[str]:
    return [json.loads(line)["custom_id"] for line in api.uploaded_jsonl[index].splitlines()]


# ==== the happy path =============================================================================


def test_submit_poll_collect_stores_drafts_and_closes_the_ledger(conn, client, api, openai_server) -> None:
    requests = _planned(conn, 3)

    batch_id = _submit(conn, client, requests)
    assert batch_id is not None
    assert {row.vendor_batch_id for row in ledger.rows(conn, CAMPAIGN, VERSION, MODEL).values()} == {batch_id}
    assert _wait(client, batch_id) == ["in_progress", "finalizing", "completed"]

    outcome = _collect(conn, client, batch_id, requests)

    assert (outcome.succeeded, outcome.failed, outcome.resubmit, outcome.reasks) == (3, {}, [], {})
    stored = conn.execute(
        "select unit_id, language, body, model, input_tokens, vendor_request_id from ops.generated_content order by 1"
    ).fetchall()
    assert [row[0] for row in stored] == ["cohort-000", "cohort-001", "cohort-002"]
    assert all(row[1] == "de" and FIRST_NAME_PLACEHOLDER not in row[2] and row[3] == MODEL for row in stored)
    assert all(row[4] > 0 and row[5].startswith("chatcmpl-local-") for row in stored)
    totals = ledger.totals(conn, CAMPAIGN, VERSION, MODEL)
    assert (totals["succeeded"], totals["attempts"]) == (3, 3)
    assert totals["cost_usd"] == pytest.approx(cost_of(totals["input_tokens"], totals["output_tokens"]))
    assert outcome.cost_usd == pytest.approx(totals["cost_usd"])
    assert api.paid_lines == 3
    assert openai_server.chat_requests() == []  # every draft came through the batch, none through sync


def test_batch_lines_are_the_bodies_the_sync_path_sends(conn, client, api) -> None:
    requests = _planned(conn, 2)

    _submit(conn, client, requests)

    lines = api.uploaded_lines()
    assert [line["custom_id"] for line in lines] == [r.custom_id for r in requests]
    for line, request in zip(lines, requests, strict=True):
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
        assert line["body"] == completion_body(request, model=MODEL, **BODY_KWARGS)


def test_vendor_files_are_deleted_after_collect(conn, client, api) -> None:
    requests = _planned(conn, 3)
    api.fail_lines({requests[0].custom_id: 500})
    batch_id = _submit(conn, client, requests)
    _wait(client, batch_id)
    vendor_batch = client.batches.retrieve(batch_id)
    files = {vendor_batch.input_file_id, vendor_batch.output_file_id, vendor_batch.error_file_id}
    assert None not in files

    outcome = _collect(conn, client, batch_id, requests)

    assert set(outcome.deleted_files) == files
    assert files <= set(api.deleted_file_ids)
    assert api.files == {}
    assert [f.id for f in client.files.list()] == []


def test_collecting_a_batch_twice_records_nothing_twice(conn, client, api) -> None:
    requests = _planned(conn, 2)
    batch_id = _submit(conn, client, requests)
    _wait(client, batch_id)
    _collect(conn, client, batch_id, requests)
    before = ledger.totals(conn, CAMPAIGN, VERSION, MODEL)

    again = _collect(conn, client, batch_id, requests)

    assert (again.succeeded, again.failed, again.cost_usd) == (0, {}, 0.0)
    assert ledger.totals(conn, CAMPAIGN, VERSION, MODEL) == before


# ==== failures ===================================================================================


def test_failed_lines_are_recorded_failed_and_only_the_retryable_ones_are_sent_again(conn, client, api) -> None:
    requests = _planned(conn, 4)
    server_error, client_error = requests[0].custom_id, requests[1].custom_id
    api.fail_lines({server_error: 500, client_error: 400})
    batch_id = _submit(conn, client, requests)
    _wait(client, batch_id)

    outcome = _collect(conn, client, batch_id, requests)

    assert outcome.succeeded == 2
    assert outcome.failed == {"server": 1, "client": 1}
    assert outcome.resubmit == [server_error]
    statuses = _statuses(conn)
    assert statuses[server_error] == ("failed", "server")
    assert statuses[client_error] == ("failed", "client")
    assert api.paid_lines == 2

    by_id = {r.custom_id: r for r in requests}
    second = _submit(conn, client, [by_id[cid] for cid in outcome.resubmit])
    assert _uploaded_custom_ids(api, 1) == [server_error]
    _wait(client, second)
    retried = _collect(conn, client, second, requests)

    assert retried.succeeded == 1
    assert _statuses(conn)[server_error] == ("succeeded", None)
    assert api.paid_lines == 3
    assert len(api.created_batch_ids) == 2


def test_expired_batch_keeps_its_completed_results_and_resubmits_only_the_rest(conn, client, api) -> None:
    requests = _planned(conn, 5)
    api.expire_next_batch(completed=2)
    batch_id = _submit(conn, client, requests)

    assert _wait(client, batch_id)[-1] == "expired"
    outcome = _collect(conn, client, batch_id, requests)

    assert outcome.succeeded == 2
    assert outcome.failed == {"expired": 3}
    assert outcome.resubmit == [r.custom_id for r in requests[2:]]
    assert conn.execute("select count(*) from ops.generated_content").fetchone() == (2,)

    second = _submit(conn, client, requests[2:])
    assert _uploaded_custom_ids(api, 1) == [r.custom_id for r in requests[2:]]
    _wait(client, second)
    _collect(conn, client, second, requests)

    assert ledger.totals(conn, CAMPAIGN, VERSION, MODEL)["succeeded"] == 5
    assert api.paid_lines == 5  # the two answered before expiry were not paid again


def test_rejected_draft_is_reasked_once_with_its_answer_and_the_reason(conn, client, api) -> None:
    requests = _planned(conn, 2)
    rejected = requests[0]
    api.malformed_lines({rejected.custom_id})
    first = _submit(conn, client, requests)
    _wait(client, first)

    outcome = _collect(conn, client, first, requests)

    assert (outcome.succeeded, outcome.failed, outcome.resubmit) == (1, {"rejected": 1}, [])
    history = outcome.reasks[rejected.custom_id]
    assert [turn["role"] for turn in history] == ["assistant", "user"]
    assert "does not match the schema" in history[1]["content"]
    assert outcome.counts()["reasks"] == [rejected.custom_id]  # ids only in what may be logged
    paid = conn.execute(
        "select input_tokens, status from ops.generation_ledger where custom_id = ?", [rejected.custom_id]
    )
    assert paid.fetchone()[0] > 0  # the rejected answer was paid for, and the ledger says so

    second = _submit(conn, client, [rejected], histories=outcome.reasks)
    line = api.uploaded_lines()[-1]
    assert line["body"] == completion_body(rejected, model=MODEL, history=history, **BODY_KWARGS)
    assert len(line["body"]["messages"]) == 4
    api.no_placeholder_lines({rejected.custom_id})  # rejected again: no third ask
    _wait(client, second)
    again = _collect(conn, client, second, requests)

    assert (again.failed, again.reasks, again.resubmit) == ({"rejected": 1}, {}, [])
    assert _statuses(conn)[rejected.custom_id] == ("failed", "rejected")
    assert ledger.totals(conn, CAMPAIGN, VERSION, MODEL)["attempts"] == 3


def test_refused_and_filtered_answers_are_failed_without_a_resubmit(conn, client, api) -> None:
    requests = _planned(conn, 3)
    api.refuse_lines({requests[0].custom_id})
    api.filter_lines({requests[1].custom_id})
    batch_id = _submit(conn, client, requests)
    _wait(client, batch_id)

    outcome = _collect(conn, client, batch_id, requests)

    assert (outcome.succeeded, outcome.failed) == (1, {"refused": 1, "filtered": 1})
    assert (outcome.resubmit, outcome.reasks) == ([], {})
    reasons = conn.execute("select last_error from ops.generation_ledger where status = 'failed'").fetchall()
    assert all("sorry" not in reason.lower() for (reason,) in reasons)  # no response text in the ledger


def test_batch_that_fails_validation_fails_its_units(conn, client, api) -> None:
    requests = _planned(conn, 2)
    api.fail_validation_next("too_many_tasks", "Injected.")
    batch_id = _submit(conn, client, requests)

    assert _wait(client, batch_id) == ["failed"]
    assert batch.status(client, batch_id).errors == ("too_many_tasks",)
    outcome = _collect(conn, client, batch_id, requests)

    assert (outcome.failed, outcome.resubmit) == ({"client": 2}, [])
    assert {s for s, _ in _statuses(conn).values()} == {"failed"}
    assert api.files == {}  # the input file was deleted too
    assert api.paid_lines == 0


def test_emulated_api_fails_a_batch_with_duplicate_ids_or_mixed_models_by_line(client, api) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": MODEL, "messages": []}}
    other_model = {**line, "custom_id": "b", "body": {"model": "gpt-4.1", "messages": []}}
    data = "\n".join(json.dumps(x) for x in (line, line, other_model)).encode()
    upload = client.files.create(file=("input.jsonl", data, "application/jsonl"), purpose="batch")
    created = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert created.status == "validating"

    failed = client.batches.retrieve(created.id)

    assert failed.status == "failed"
    assert [(e.code, e.line) for e in failed.errors.data] == [("duplicate_custom_id", 2), ("model_mismatch", 3)]
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("input.txt", data, "text/plain"), purpose="batch")


# ==== crash recovery =============================================================================


def test_crash_between_create_and_set_batch_is_reattached_by_metadata(conn, client, api, monkeypatch) -> None:
    requests = _planned(conn, 3)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(batch.ledger, "set_batch", crash)
        with pytest.raises(RuntimeError):
            _submit(conn, client, requests)
    markers = {row.vendor_batch_id for row in ledger.rows(conn, CAMPAIGN, VERSION, MODEL).values()}
    assert len(markers) == 1 and markers.pop().startswith("pending:")

    batch_ids = batch.reattach(conn, client, CAMPAIGN, VERSION, MODEL)

    assert batch_ids == api.created_batch_ids
    rows = ledger.rows(conn, CAMPAIGN, VERSION, MODEL).values()
    assert {(row.status, row.vendor_batch_id, row.attempts) for row in rows} == {("submitted", batch_ids[0], 1)}
    to_request = [
        r for r in requests if ledger.rows(conn, CAMPAIGN, VERSION, MODEL)[r.unit_id].status in ledger.TO_REQUEST
    ]
    assert _submit(conn, client, to_request) is None  # nothing left to send
    _wait(client, batch_ids[0])
    assert _collect(conn, client, batch_ids[0], requests).succeeded == 3
    assert len(api.created_batch_ids) == 1
    assert api.paid_lines == 3


def test_reattach_keeps_the_first_batch_of_a_submission_and_cancels_a_duplicate(conn, client, api, monkeypatch) -> None:
    requests = _planned(conn, 2)
    unrelated = client.files.create(file=("other.jsonl", b"{}", "application/jsonl"), purpose="batch")
    client.batches.create(
        input_file_id=unrelated.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"gmp_submission": "someone-else", "gmp_campaign": CAMPAIGN},
    )
    with monkeypatch.context() as patch:
        patch.setattr(batch.ledger, "set_batch", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
        with pytest.raises(RuntimeError):
            _submit(conn, client, requests)
    ours = client.batches.retrieve(api.created_batch_ids[-1])
    duplicate = client.batches.create(  # what a blind retry of the create would have made
        input_file_id=ours.input_file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=ours.metadata,
    )

    assert batch.reattach(conn, client, CAMPAIGN, VERSION, MODEL) == [ours.id]
    assert api.batches[duplicate.id].status == "cancelling"


def test_crash_before_create_puts_units_back_to_planned_and_deletes_the_upload(conn, client, api, monkeypatch) -> None:
    requests = _planned(conn, 2)

    def timeout(*args: object, **kwargs: object) -> None:
        raise openai.APITimeoutError(request=None)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(openai.resources.batches.Batches, "create", timeout)
        with pytest.raises(openai.APITimeoutError):
            _submit(conn, client, requests)
    uploaded = list(api.files)
    assert len(uploaded) == 1

    assert batch.reattach(conn, client, CAMPAIGN, VERSION, MODEL) == []

    rows = ledger.rows(conn, CAMPAIGN, VERSION, MODEL).values()
    assert {(row.status, row.vendor_batch_id, row.attempts) for row in rows} == {("planned", None, 0)}
    assert api.deleted_file_ids == uploaded
    assert api.created_batch_ids == []
    assert _submit(conn, client, requests) is not None  # sent again, once


def test_reattach_returns_the_batches_of_submitted_units(conn, client) -> None:
    requests = _planned(conn, 2)
    first = _submit(conn, client, requests[:1])
    second = _submit(conn, client, requests[1:])

    assert batch.reattach(conn, client, CAMPAIGN, VERSION, MODEL) == sorted([first, second])


# ==== what leaves ================================================================================


def test_request_lines_carry_only_allow_listed_attributes(conn, client, api) -> None:
    contact = {
        "email": "maria.planted@example.org",
        "first_name": "Mariaplanted",
        "last_name": "Schmidtplanted",
        "phone": "+49 170 5550123",
        "notes": "call after 6pm",
        "country": "DE",
        "lifecycle_stage": "customer",
        "interest": "running",
        "last_purchase_category": "shoes",
    }
    attributes = {k: v for k, v in contact.items() if k in COHORT_ATTRIBUTES}
    requests = [_request(0, attributes)]
    ledger.plan(conn, requests, model=MODEL, provider=PROVIDER, transport="batch", unit_kind="cohort", run_id="run-1")

    batch_id = _submit(conn, client, requests)

    raw = "\n".join(api.uploaded_jsonl)
    for planted in ("maria.planted@example.org", "Mariaplanted", "Schmidtplanted", "5550123", "6pm", "cohort-000"):
        assert planted not in raw
    (line,) = api.uploaded_lines()
    assert set(line) == {"custom_id", "method", "url", "body"}
    sent = json.loads(DATA_BLOCK.search(line["body"]["messages"][1]["content"]).group(1))
    assert set(sent) <= set(COHORT_ATTRIBUTES)
    vendor_batch = client.batches.retrieve(batch_id)
    assert set(vendor_batch.metadata) == {"gmp_submission", "gmp_campaign"}
    assert vendor_batch.metadata["gmp_campaign"] == CAMPAIGN


# ==== the trigger ================================================================================


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


def test_trigger_fires_once_every_batch_is_terminal(conn, client, api) -> None:
    from governed_marketing.orchestration.batch_trigger import OpenAIBatchTrigger

    requests = _planned(conn, 3)
    api.expire_next_batch(completed=0)
    expired = _submit(conn, client, requests[:1])
    completed = _submit(conn, client, requests[1:])

    event = asyncio.run(_first_event(OpenAIBatchTrigger([expired, completed], poll_interval=0.01, timeout_s=30)))

    assert event.payload == {
        "status": "done",
        "batch_ids": [expired, completed],
        "statuses": {expired: "expired", completed: "completed"},
        "error": None,
    }


def test_trigger_reports_a_timeout_and_an_unknown_batch(conn, client) -> None:
    from governed_marketing.orchestration.batch_trigger import OpenAIBatchTrigger

    batch_id = _submit(conn, client, _planned(conn, 1))

    slow = asyncio.run(_first_event(OpenAIBatchTrigger([batch_id], poll_interval=0.01, timeout_s=0.001)))
    unknown = asyncio.run(_first_event(OpenAIBatchTrigger(["batch_missing"], poll_interval=0.01, timeout_s=5)))

    assert (slow.payload["status"], slow.payload["statuses"]) == ("timeout", {batch_id: "in_progress"})
    assert (unknown.payload["status"], unknown.payload["error"]) == (
        "error",
        "batch batch_missing: HTTP 404 while polling",
    )


def test_trigger_serializes_to_its_classpath_and_back() -> None:
    from governed_marketing.orchestration.batch_trigger import OpenAIBatchTrigger

    trigger = OpenAIBatchTrigger(["batch_a", "batch_b"], poll_interval=30, timeout_s=3600)

    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)

    assert classpath == "governed_marketing.orchestration.batch_trigger.OpenAIBatchTrigger"
    assert kwargs == {"batch_ids": ["batch_a", "batch_b"], "poll_interval": 30.0, "timeout_s": 3600.0}
    assert rebuilt.serialize() == (classpath, kwargs)
    assert "key" not in json.dumps(kwargs).lower()
