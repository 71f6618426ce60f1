"""A gRPC app for herd's AppCallback tests, on the Dapr SDK's `dapr-ext-grpc` alone.

Subscribes to $TOPIC on the `pubsub` component (ListTopicSubscriptions) and appends every event
it gets (OnTopicEvent) as a JSON line to $RECEIVED_FILE; an event whose data is {"fail": N}
is answered RETRY until it was seen N times, one with {"drop": true} DROP. The method `echo`
(OnInvoke) answers JSON with what it got. Listens on $PORT (herd's `port = "auto"`).
"""

import json
import os

from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App, InvokeMethodRequest, InvokeMethodResponse

app = App()
seen = {}


def record(entry):
    with open(os.environ["RECEIVED_FILE"], "a") as f:
        f.write(json.dumps(entry) + "\n")


@app.subscribe(pubsub_name="pubsub", topic=os.environ["TOPIC"])
def on_event(event):
    data = json.loads(event.data) if event.data else None
    seen[event.id] = seen.get(event.id, 0) + 1
    record({"id": event.id, "type": event.type, "data": data, "attempt": seen[event.id],
            "content_type": event.content_type})
    if isinstance(data, dict) and data.get("drop"):
        return TopicEventResponse("drop")
    if isinstance(data, dict) and seen[event.id] <= data.get("fail", 0):
        return TopicEventResponse("retry")
    return TopicEventResponse("success")


@app.method(name="echo")
def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
    metadata = dict(request.metadata)
    answer = {
        "data": request.text(),
        "content_type": request.content_type,
        "caller": (metadata.get("dapr-caller-app-id") or [None])[0],
        "traceparent": bool(metadata.get("traceparent")),
    }
    return InvokeMethodResponse(json.dumps(answer).encode(), "application/json")


app.run(int(os.environ["PORT"]), listen_address="127.0.0.1")
