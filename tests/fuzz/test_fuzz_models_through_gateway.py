"""Bad input through the gateway to real Triton servers: each kind gets its exact gRPC status, and after
every example a well-formed request from another client (its own connection) is still answered.

What answers each kind: the gateway itself for what it reads to route (bytes that are no protobuf
message, an oversize message, an unknown model, a sequence that was never started); the pod for what
only the model knows (dtype, shape, a sequence id of 0 on a stateful model, a corrupt JPEG or H.264
access unit, a version the pod does not have), passed through as the pod said it. The last test checks
that the gateway's memory stayed flat over all of it.
"""

from __future__ import annotations

import grpc
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import assume, given, settings, strategies as st
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from gateway import wire
from loadtest.payloads import encode_jpeg, synthetic_image
from loadtest.video_source import load_clip
from tests.fuzz.conftest import MAX_MESSAGE_BYTES
from tests.fuzz.profiles import examples

pytestmark = pytest.mark.slow

INFER = "/inference.GRPCInferenceService/ModelInfer"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
Code = grpc.StatusCode
# Every model the fleet serves, and the dtypes Triton knows (add_one takes FP32 only).
SERVED = {"add_one", "running_sum", "image_preprocess", "camera_stream"}
DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float64]


def tensor(name: str, array: np.ndarray) -> grpcclient.InferInput:
    dtype = "BYTES" if array.dtype == np.object_ else np_to_triton_dtype(array.dtype)
    value = grpcclient.InferInput(name, list(array.shape), dtype)
    value.set_data_from_numpy(array)
    return value


def add_one_input(values) -> list[grpcclient.InferInput]:
    return [tensor("INPUT0", np.asarray(values, dtype=np.float32))]


class Clients:
    """The fuzzing client and the bystander, each on its own connection to the gateway."""

    def __init__(self, url: str):
        self.bad = grpcclient.InferenceServerClient(url, channel_args=OWN_CONNECTION)
        self.bystander = grpcclient.InferenceServerClient(url, channel_args=OWN_CONNECTION)
        self.channel = grpc.insecure_channel(url, options=OWN_CONNECTION + [("grpc.max_send_message_length", -1)])
        self.raw = self.channel.unary_unary(INFER)  # no serializers: the bytes go as they are

    def refused(self, call) -> Code:
        """The status `call` (made with the fuzzing client) ended with; it must not succeed."""
        return self.refusal(call)[0]

    def refusal(self, call) -> tuple[Code, str]:
        """The status and message `call` ended with."""
        try:
            call()
        except InferenceServerException as error:
            code = error.status()
            return (getattr(Code, code.removeprefix("StatusCode.")) if code else None), error.message()
        except grpc.RpcError as error:
            return error.code(), error.details()
        pytest.fail("bad input was answered as if it were good")

    def bystander_is_served(self) -> None:
        result = self.bystander.infer("add_one", add_one_input([1.0, 2.0]), client_timeout=60)
        assert result.as_numpy("OUTPUT0").tolist() == [2.0, 3.0]

    def close(self) -> None:
        self.bad.close()
        self.bystander.close()
        self.channel.close()


@pytest.fixture(scope="module")
def clients(fuzz_gateway):
    clients = Clients(fuzz_gateway.url)
    yield clients
    clients.close()


@pytest.fixture(scope="module")
def warmed_rss(fuzz_gateway, clients):
    """The gateway's RSS once each kind of bad input went through it (its buffers and caches made)."""
    for kind in (malformed_bytes, unknown_model, wrong_dtype, corrupt_jpeg):
        kind(clients, *WARM_UP[kind])
    clients.bystander_is_served()
    return psutil.Process(fuzz_gateway.pid).memory_info().rss


JPEG = encode_jpeg(synthetic_image(120, 160, 0))
CLIP = load_clip("h264", "synthetic", "160x120", 10, 5.0).units


# ---- the kinds of bad input, each with the status it must get ---------------------------------------

def malformed_bytes(clients: Clients, data: bytes) -> None:
    assert clients.refused(lambda: clients.raw(data, timeout=60)) == Code.INVALID_ARGUMENT


def unknown_model(clients: Clients, name: str) -> None:
    assert clients.refused(lambda: clients.bad.infer(name, add_one_input([1.0]), client_timeout=60)) == Code.NOT_FOUND


def wrong_dtype(clients: Clients, dtype) -> None:
    inputs = [tensor("INPUT0", np.ones(3, dtype=dtype))]
    assert clients.refused(lambda: clients.bad.infer("add_one", inputs, client_timeout=60)) == Code.INVALID_ARGUMENT


def corrupt_jpeg(clients: Clients, data: bytes) -> None:
    inputs = [tensor("IMAGE", np.array([[data]], dtype=np.object_))]
    call = lambda: clients.bad.infer("image_preprocess", inputs, client_timeout=60)  # noqa: E731
    assert clients.refused(call) == Code.INVALID_ARGUMENT


WARM_UP = {malformed_bytes: (b"\xff\xff\xff",), unknown_model: ("no_such_model",), wrong_dtype: (np.int32,),
           corrupt_jpeg: (JPEG[:100],)}


# ---- the properties -------------------------------------------------------------------------------

@settings(max_examples=examples(15, 300))
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=60).map(lambda tail: b"\x0a\x07add_one" + tail)))
def test_bytes_that_are_no_request_get_invalid_argument(clients, warmed_rss, data):
    try:
        wire.parse_infer_request(data)
    except wire.MalformedMessage:
        malformed_bytes(clients, data)
        clients.bystander_is_served()
        return
    assume(False)  # bytes that happen to route: the cases below send those


@settings(max_examples=examples(8, 150))
@given(st.binary(min_size=1, max_size=40))
def test_a_request_the_gateway_routes_but_the_pod_cannot_parse_gets_internal(clients, warmed_rss, tail):
    """A valid start (the model's name) and broken bytes after it: the gateway forwards what it does not
    need to read, and Triton's gRPC server answers what it cannot parse with INTERNAL ("Unable to parse
    request"), its own code for that, which the gateway passes on."""
    data = b"\x0a\x07add_one" + b"\x2a" + bytes([len(tail)]) + tail  # tail: the bytes of an input (field 5)
    assume(_routes(data) and _protobuf_refuses(data))
    assert clients.refused(lambda: clients.raw(data, timeout=60)) == Code.INTERNAL
    clients.bystander_is_served()


def _routes(data: bytes) -> bool:
    try:
        return wire.parse_infer_request(data).model == "add_one"
    except wire.MalformedMessage:
        return False


def _protobuf_refuses(data: bytes) -> bool:
    try:
        service_pb2.ModelInferRequest.FromString(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, whichever implementation raises it
        return True
    return False


@settings(max_examples=examples(3, 20))
@given(st.integers(1, 64 << 10))
def test_an_oversize_message_gets_resource_exhausted(clients, warmed_rss, excess):
    message = service_pb2.ModelInferRequest(model_name="add_one")
    message.raw_input_contents.append(bytes(MAX_MESSAGE_BYTES + excess))
    data = message.SerializeToString()
    assert clients.refused(lambda: clients.raw(data, timeout=60)) == Code.RESOURCE_EXHAUSTED
    clients.bystander_is_served()


@settings(max_examples=examples(10, 200))
@given(st.text(min_size=1, max_size=40).filter(lambda name: name not in SERVED))
def test_an_unknown_model_gets_not_found(clients, warmed_rss, name):
    unknown_model(clients, name)
    clients.bystander_is_served()


@settings(max_examples=examples(6, 100))
@given(st.integers(2, 1 << 40).map(str))
def test_an_unknown_version_gets_the_pods_not_found_and_the_model_stays_served(clients, warmed_rss, version):
    """A version no pod has is the request's fault: the pods keep the model for everyone else."""
    call = lambda: clients.bad.infer("add_one", add_one_input([1.0]), model_version=version, client_timeout=60)  # noqa: E731
    code, message = clients.refusal(call)
    assert (code, message) == (Code.NOT_FOUND, f"Request for unknown model: 'add_one' version {version} is not found")
    clients.bystander_is_served()


@settings(max_examples=examples(8, 100))
@given(st.sampled_from(DTYPES))
def test_a_wrong_dtype_gets_invalid_argument(clients, warmed_rss, dtype):
    wrong_dtype(clients, dtype)
    clients.bystander_is_served()


@settings(max_examples=examples(8, 100))
@given(st.lists(st.integers(0, 4), min_size=0, max_size=4).filter(lambda shape: len(shape) != 1))
def test_a_wrong_shape_gets_invalid_argument(clients, warmed_rss, shape):
    inputs = [tensor("INPUT0", np.ones(shape, dtype=np.float32))]
    assert clients.refused(lambda: clients.bad.infer("add_one", inputs, client_timeout=60)) == Code.INVALID_ARGUMENT
    clients.bystander_is_served()


@settings(max_examples=examples(6, 100))
@given(st.integers(1, 1 << 62), st.booleans())
def test_a_sequence_that_was_never_started_gets_failed_precondition(clients, warmed_rss, sequence_id, end):
    inputs = [tensor("INPUT0", np.ones((1, 1), dtype=np.float32))]
    call = lambda: clients.bad.infer("running_sum", inputs, sequence_id=sequence_id + 1000, sequence_end=end,  # noqa: E731
                                     client_timeout=60)
    assert clients.refused(call) == Code.FAILED_PRECONDITION
    clients.bystander_is_served()


@settings(max_examples=examples(4, 40))
@given(st.booleans(), st.booleans())
def test_sequence_id_0_on_a_stateful_model_gets_invalid_argument(clients, warmed_rss, start, end):
    inputs = [tensor("INPUT0", np.ones((1, 1), dtype=np.float32))]
    call = lambda: clients.bad.infer("running_sum", inputs, sequence_start=start, sequence_end=end,  # noqa: E731
                                     client_timeout=60)
    assert clients.refused(call) == Code.INVALID_ARGUMENT
    clients.bystander_is_served()


corrupt_jpegs = st.one_of(
    st.integers(0, len(JPEG) - 16).map(lambda cut: JPEG[:cut]),  # truncated
    st.binary(max_size=64).filter(lambda data: not data.startswith((b"\xff\xd8", b"\x89PNG"))),  # not an image
)


@settings(max_examples=examples(10, 200))
@given(corrupt_jpegs)
def test_a_corrupt_jpeg_gets_invalid_argument(clients, warmed_rss, data):
    corrupt_jpeg(clients, data)
    clients.bystander_is_served()


corrupt_units = st.one_of(
    st.binary(min_size=1, max_size=64).filter(lambda unit: not unit.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))),
    st.tuples(st.integers(0x80, 0xFF), st.binary(max_size=32)).map(lambda t: b"\x00\x00\x01" + bytes([t[0]]) + t[1]),
)


@settings(max_examples=examples(6, 100))
@given(corrupt_units, st.integers(1, 1 << 30))
def test_a_corrupt_access_unit_gets_invalid_argument_and_the_camera_resumes_at_its_keyframe(
        clients, warmed_rss, unit, camera):
    """One camera's sequence: a keyframe, a corrupt access unit (refused), the next keyframe decodes."""

    def send(data: bytes, **flags):
        inputs = [tensor("ACCESS_UNITS", np.array([[data]], dtype=np.object_))]
        return clients.bad.infer("camera_stream", inputs, sequence_id=camera, client_timeout=60, **flags)

    assert send(CLIP[0], sequence_start=True).as_numpy("STATUS")[0, 0] == b"decoding"
    assert clients.refused(lambda: send(unit)) == Code.INVALID_ARGUMENT
    assert send(CLIP[0], sequence_end=True).as_numpy("STATUS")[0, 0] == b"decoding"
    clients.bystander_is_served()


def test_the_gateways_memory_stayed_flat(fuzz_gateway, clients, warmed_rss):
    """After every case above (run in file order), the gateway holds what it held after one round of
    bad input, within 16 MiB: the largest thing the cases send is one oversize message of 4 MiB (refused
    from its prefix, never held), and glibc keeps some freed heap mapped for reuse (gateway/server.py's
    malloc settings). A leak of what each call held would grow with the examples, past that bound in a
    long run."""
    for _ in range(examples(20, 200)):
        malformed_bytes(clients, b"\x0a\x03abc\xff")
        unknown_model(clients, "no_such_model")
    clients.bystander_is_served()
    growth = psutil.Process(fuzz_gateway.pid).memory_info().rss - warmed_rss
    assert growth < 16 << 20, f"the gateway's RSS grew by {growth / 2**20:.1f} MiB"
