"""Drives a running wasmq host through the official Cloudflare Python SDK (`cloudflare` on
PyPI), pointed at the host's `/client/v4`. Every response is validated strictly against the
SDK's typed models (`_strict_response_validation=True`), so a field of the wrong type or shape
fails here, not only a wrong value.

Run by `host/tests/cloudflare_api.rs`:
    python cloudflare_sdk.py http://127.0.0.1:PORT TOKEN

The host's manifest has a queue `jobs` with a pull consumer (max_retries 5, no retry delay)
and a queue `worked` consumed by a component. Prints one line per step; exits non-zero on the
first failed check.
"""

import base64
import json
import sys
import time

import cloudflare
from cloudflare import Cloudflare
from cloudflare.types.queues import (
    MessageAckResponse,
    MessagePeekResponse,
    MessagePullResponse,
    Queue,
)

base, token = sys.argv[1], sys.argv[2]
ACCOUNT = "any-account-id"
cf = Cloudflare(
    api_token=token,
    base_url=f"{base}/client/v4",
    max_retries=0,
    _strict_response_validation=True,
)


def step(text):
    print(f"step: {text}", flush=True)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


step("list queues")
queues = {q.queue_name: q for q in cf.queues.list(account_id=ACCOUNT)}
check({"jobs", "worked"} <= set(queues), f"queues listed: {sorted(queues)}")
jobs = queues["jobs"]
check(isinstance(jobs, Queue), type(jobs))
check(len(jobs.queue_id) == 32, jobs.queue_id)
check(jobs.settings.delivery_paused is False, jobs.settings)
check(
    [c.type for c in jobs.consumers] == ["http_pull"],
    f"jobs consumers: {jobs.consumers}",
)
pull_settings = jobs.consumers[0].settings
check(pull_settings.visibility_timeout_ms == 30000, pull_settings)
check(pull_settings.max_retries == 5, pull_settings)
worked = queues["worked"]
check([c.type for c in worked.consumers] == ["worker"], worked.consumers)
check(worked.consumers[0].script_name == "worker", worked.consumers)

step("get a queue by id and by name")
by_id = cf.queues.get(jobs.queue_id, account_id=ACCOUNT)
by_name = cf.queues.get("jobs", account_id=ACCOUNT)
check(by_id.queue_name == by_name.queue_name == "jobs", (by_id, by_name))

step("push text and JSON")
pushed = cf.queues.messages.push(jobs.queue_id, account_id=ACCOUNT, body="hello", content_type="text")
check(pushed.metadata.metrics.backlog_count == 1, pushed)
cf.queues.messages.push("jobs", account_id=ACCOUNT, body={"order": 42}, content_type="json")

step("bulk push")
bulk = cf.queues.messages.bulk_push(
    "jobs",
    account_id=ACCOUNT,
    messages=[
        {"body": "second", "content_type": "text"},
        {"body": [1, 2, 3], "content_type": "json"},
        {"body": "later", "content_type": "text", "delay_seconds": 3600},
    ],
)
check(bulk.metadata.metrics.backlog_count == 5, bulk)

step("pull with a lease")
pulled = cf.queues.messages.pull("jobs", account_id=ACCOUNT, batch_size=10, visibility_timeout_ms=60000)
check(isinstance(pulled, MessagePullResponse), type(pulled))
bodies = {}
for m in pulled.messages:
    kind = m.metadata["CF-Content-Type"]
    body = m.body if kind == "text" else json.loads(base64.b64decode(m.body))
    bodies[json.dumps(body)] = m
    check(m.attempts == 1 and len(m.lease_id) == 32 and m.timestamp_ms > 0, m)
check(
    set(bodies) == {'"hello"', '{"order": 42}', '"second"', "[1, 2, 3]"},
    f"pulled bodies: {sorted(bodies)}",
)
check(pulled.message_backlog_count == 5, pulled)

step("ack two, retry one, leave one leased")
acked = cf.queues.messages.ack(
    "jobs",
    account_id=ACCOUNT,
    acks=[{"lease_id": bodies['"hello"'].lease_id}, {"lease_id": bodies['"second"'].lease_id}],
    retries=[{"lease_id": bodies["[1, 2, 3]"].lease_id, "delay_seconds": 0}],
)
check(isinstance(acked, MessageAckResponse), type(acked))
check((acked.ack_count, acked.retry_count, acked.warnings) == (2, 1, {}), acked)

step("the retried message comes back with its second attempt")
again = cf.queues.messages.pull("jobs", account_id=ACCOUNT, batch_size=10, visibility_timeout_ms=1000)
check([m.attempts for m in again.messages] == [2], again)
first_lease = again.messages[0].lease_id

step("a late ack still deletes the message, even after it was redelivered")
time.sleep(1.2)
redelivered = cf.queues.messages.pull("jobs", account_id=ACCOUNT, visibility_timeout_ms=60000)
check([m.attempts for m in redelivered.messages] == [3], redelivered)
late = cf.queues.messages.ack("jobs", account_id=ACCOUNT, acks=[{"lease_id": first_lease}])
check((late.ack_count, late.warnings) == (1, {}), late)
gone = cf.queues.messages.ack(
    "jobs", account_id=ACCOUNT, acks=[{"lease_id": redelivered.messages[0].lease_id}]
)
check(gone.ack_count == 0 and list(gone.warnings) == [redelivered.messages[0].lease_id], gone)

step("peek shows the waiting messages without leasing them")
peeked = cf.queues.messages.peek("jobs", account_id=ACCOUNT, batch_size=10)
check(isinstance(peeked, MessagePeekResponse), type(peeked))
check([m.body for m in peeked.messages] == ["later"], peeked)

step("errors come as typed exceptions with Cloudflare's envelope")
try:
    cf.queues.messages.push("nope", account_id=ACCOUNT, body="x", content_type="text")
    raise AssertionError("a push to an unknown queue succeeded")
except cloudflare.NotFoundError as e:
    check(e.body["errors"][0]["code"] == 10104, e.body)
try:
    cf.queues.messages.push("jobs", account_id=ACCOUNT, body="x", content_type="text", delay_seconds=-1)
    raise AssertionError("a negative delay was accepted")
except cloudflare.BadRequestError as e:
    check(e.body["errors"][0]["code"] == 10203, e.body)
try:
    cf.queues.messages.pull("worked", account_id=ACCOUNT)
    raise AssertionError("a pull from a queue without a pull consumer succeeded")
except cloudflare.ConflictError as e:
    check(e.body["success"] is False, e.body)
try:
    Cloudflare(api_token="wrong", base_url=f"{base}/client/v4", max_retries=0).queues.list(
        account_id=ACCOUNT
    )
    raise AssertionError("a wrong token was accepted")
except cloudflare.AuthenticationError as e:
    check(e.status_code == 401, e)

step("purge, then its status")
purged = cf.queues.purge.start("jobs", account_id=ACCOUNT, delete_messages_permanently=True)
check(isinstance(purged, Queue) and purged.queue_name == "jobs", purged)
status = cf.queues.purge.status("jobs", account_id=ACCOUNT)
check(status.completed == "true", status)
check(cf.queues.messages.peek("jobs", account_id=ACCOUNT).messages == [], "purge left messages")

print("cloudflare sdk: all checks passed", flush=True)
