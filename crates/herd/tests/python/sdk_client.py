"""Drives herd through Dapr's gRPC API with the official Python SDK (`dapr`), unchanged.

Runs as a herd service: the SDK finds the API through the DAPR_GRPC_PORT (and DAPR_HTTP_PORT,
for its health check) and DAPR_API_TOKEN herd sets. Every step's outcome goes into one JSON
record written to $SDK_RESULT_FILE (a failure as {"code", "reason", "message"}), once the test
has created $GO_FILE (both apps subscribed); then the program idles until herd stops it.
"""

import json
import os
import signal
import sys
import time
import traceback

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import StateItem

from herd_notify import ready

HTTP_TOPIC = os.environ["HTTP_TOPIC"]
GRPC_TOPIC = os.environ["GRPC_TOPIC"]


def failure(e):
    if isinstance(e, DaprGrpcError):
        return {"code": e.code().name, "reason": e.error_code(), "message": e.details()}
    if isinstance(e, grpc.RpcError):
        return {"code": e.code().name, "reason": None, "message": e.details()}
    return {"code": type(e).__name__, "reason": None, "message": str(e)}


def attempt(f):
    try:
        f()
        return None
    except Exception as e:  # noqa: BLE001 - every failure is recorded
        return failure(e)


def run(d, r):
    r["grpcPort"] = os.environ.get("DAPR_GRPC_PORT")
    store = "statestore"
    d.save_state(store, "greeting", "hello")
    got = d.get_state(store, "greeting")
    r["get"] = {"data": got.data.decode(), "etag": got.etag}
    r["missing"] = {"data": d.get_state(store, "nothing-here").data.decode()}

    # ETags: a stale one is the SDK's error, and nothing is written.
    d.save_state(store, "greeting", "hello again", etag=got.etag)
    r["stale"] = attempt(lambda: d.save_state(store, "greeting", "lost", etag=got.etag))
    r["afterStale"] = d.get_state(store, "greeting").data.decode()
    r["staleDelete"] = attempt(lambda: d.delete_state(store, "greeting", etag=got.etag))

    # Bulk save and get, delete.
    d.save_bulk_state(store, [StateItem("a", "1"), StateItem("b", '{"n": 2}')])
    bulk = d.get_bulk_state(store, ["a", "b", "absent"]).items
    r["bulk"] = [{"key": i.key, "data": i.data.decode(), "etag": i.etag} for i in bulk]
    d.delete_state(store, "a")
    r["afterDelete"] = d.get_state(store, "a").data.decode()

    # Transactions: all or nothing.
    stale = d.get_state(store, "b").etag + "0"
    r["staleTransaction"] = attempt(lambda: d.execute_state_transaction(store, [
        TransactionalStateOperation(key="t1", data="one"),
        TransactionalStateOperation(key="b", data="x", etag=stale),
    ]))
    r["afterStaleTransaction"] = d.get_state(store, "t1").data.decode()
    d.execute_state_transaction(store, [
        TransactionalStateOperation(key="t1", data="one"),
        TransactionalStateOperation(key="b", operation_type=TransactionOperationType.delete),
    ])
    r["afterTransaction"] = [d.get_state(store, k).data.decode() for k in ["t1", "b"]]

    # Bad requests.
    r["unknownStore"] = attempt(lambda: d.get_state("no-such-store", "k"))
    r["badKey"] = attempt(lambda: d.save_state(store, "a||b", "v"))
    r["query"] = attempt(lambda: d.query_state(store, "{}"))

    # Publish to the topics an HTTP app and a gRPC app subscribe to.
    d.publish_event("pubsub", HTTP_TOPIC, json.dumps({"to": "http"}),
                    data_content_type="application/json")
    d.publish_event("pubsub", GRPC_TOPIC, json.dumps({"to": "grpc"}),
                    data_content_type="application/json")
    d.publish_event("pubsub", GRPC_TOPIC, json.dumps({"to": "grpc", "fail": 1}),
                    data_content_type="application/json")
    r["unknownPubsub"] = attempt(lambda: d.publish_event("nope", "t", "{}"))

    # Invocation of an HTTP app and of a gRPC app.
    got = d.invoke_method("pyhttp", "items/7", data="hi", http_verb="PUT",
                          content_type="text/plain")
    r["invokeHttp"] = json.loads(got.text())
    got = d.invoke_method("pygrpc", "echo", data="ping", content_type="text/plain")
    r["invokeGrpc"] = {"body": json.loads(got.text()), "contentType": got.content_type}
    r["invokeMissing"] = attempt(lambda: d.invoke_method("pygrpc", "no-such-method", data="x"))

    # Locks.
    lock = d.try_lock(store, "res", "me", 30)
    r["lock"] = {"granted": lock.success}
    r["lock"]["held"] = d.try_lock(store, "res", "you", 30).success
    r["lock"]["unlockOthers"] = d.unlock(store, "res", "you").status.value
    r["lock"]["unlock"] = d.unlock(store, "res", "me").status.value
    r["lock"]["unlockAgain"] = d.unlock(store, "res", "me").status.value

    # Metadata.
    d.set_metadata("stage", "test")
    meta = d.get_metadata()
    r["metadata"] = {
        "id": meta.application_id,
        "components": sorted(c.name for c in meta.registered_components),
        "extended": dict(meta.extended_metadata),
    }


def main():
    ready()
    # The test says when both apps are subscribed.
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.02)
    r = {}
    try:
        with DaprClient() as d:
            run(d, r)
    except Exception:  # noqa: BLE001 - reported to the test
        r["error"] = traceback.format_exc()
    tmp = os.environ["SDK_RESULT_FILE"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(r, f)
    os.rename(tmp, os.environ["SDK_RESULT_FILE"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.pause()


main()
