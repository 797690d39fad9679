"""Locust's side of the benchmark: a gRPC user (locust's documented pattern) sending ModelInfer.

Every user sends the same pre-built request to TARGET as fast as answers come back. At test stop the
file named by LOCUST_BENCH_OUT gets the requests made and this process's CPU seconds in between.
"""

import json
import os
import time

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, events, task
from tritonclient.grpc import service_pb2, service_pb2_grpc

grpc_gevent.init_gevent()

BODY = bytes.fromhex(os.environ["LOCUST_BENCH_BODY"]) if "LOCUST_BENCH_BODY" in os.environ else b""
_marks = {}


@events.test_start.add_listener
def _start(environment, **_):
    _marks["cpu"] = time.process_time()
    _marks["wall"] = time.monotonic()


@events.test_stop.add_listener
def _stop(environment, **_):
    stats = environment.stats.total
    with open(os.environ["LOCUST_BENCH_OUT"], "w") as out:
        json.dump({"requests": stats.num_requests, "failures": stats.num_failures,
                   "cpu_s": time.process_time() - _marks["cpu"], "wall_s": time.monotonic() - _marks["wall"]}, out)


class TritonGrpcUser(User):
    wait_time = constant(0)

    def on_start(self):
        self.channel = grpc.insecure_channel(self.host)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.request = service_pb2.ModelInferRequest.FromString(BODY)

    @task
    def infer(self):
        start = time.perf_counter()
        exception = None
        try:
            self.stub.ModelInfer(self.request)
        except grpc.RpcError as exc:
            exception = exc
        self.environment.events.request.fire(request_type="grpc", name="ModelInfer",
                                             response_time=(time.perf_counter() - start) * 1000,
                                             response_length=0, exception=exception, context={})
