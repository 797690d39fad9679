"""The fleet's merged answers, over answers as Triton gives them: statistics summed per model and
version, and one repository index entry per model and version with its pod count."""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from gateway.control import repository_index
from gateway.control import statistics

ModelIndex = service_pb2.RepositoryIndexResponse.ModelIndex


def pod_statistics(count: int, last: int, batches: dict[int, int], memory: int = 0) -> service_pb2.ModelStatisticsResponse:
    stats = service_pb2.ModelStatistics(name="m", version="1", last_inference=last, inference_count=count,
                                        execution_count=count)
    stats.inference_stats.success.count, stats.inference_stats.success.ns = count, 1000 * count
    stats.inference_stats.queue.ns = 10 * count
    for size, executions in batches.items():
        batch = stats.batch_stats.add(batch_size=size)
        batch.compute_infer.count, batch.compute_infer.ns = executions, 100 * executions
    if memory:
        stats.memory_usage.add(type="GPU", id=0, byte_size=memory)
    stats.response_stats["0"].success.count = count
    return service_pb2.ModelStatisticsResponse(model_stats=[stats])


def test_statistics_are_summed_and_the_last_inference_is_the_latest():
    merged = statistics.merge([pod_statistics(3, 50, {1: 3, 4: 1}, memory=10),
                               pod_statistics(5, 70, {1: 5}, memory=20)]).model_stats
    assert len(merged) == 1
    stats = merged[0]
    assert (stats.inference_count, stats.execution_count, stats.last_inference) == (8, 8, 70)
    assert (stats.inference_stats.success.count, stats.inference_stats.success.ns) == (8, 8000)
    assert stats.inference_stats.queue.ns == 80
    assert [(b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in stats.batch_stats] == [
        (1, 8, 800), (4, 1, 100)]
    assert [(u.type, u.id, u.byte_size) for u in stats.memory_usage] == [("GPU", 0, 30)]
    assert stats.response_stats["0"].success.count == 8


def test_statistics_of_different_versions_stay_apart():
    one, two = pod_statistics(3, 1, {}), pod_statistics(4, 2, {})
    two.model_stats[0].version = "2"
    merged = statistics.merge([one, two]).model_stats
    assert [(s.version, s.inference_count) for s in merged] == [("1", 3), ("2", 4)]


def index(*models: tuple[str, str, str, str]) -> service_pb2.RepositoryIndexResponse:
    return service_pb2.RepositoryIndexResponse(
        models=[ModelIndex(name=n, version=v, state=s, reason=r) for n, v, s, r in models])


def test_one_entry_per_model_and_version_with_the_most_available_state_and_the_pod_count():
    merged = repository_index.merge({
        "a:1": index(("m", "1", "READY", ""), ("n", "1", "UNAVAILABLE", "unloaded")),
        "b:1": index(("m", "1", "UNAVAILABLE", "unloaded"), ("n", "1", "LOADING", "")),
        "c:1": index(("m", "", "", ""), ("n", "1", "UNAVAILABLE", "unloaded")),
    })
    assert [(m.name, m.version, m.state, m.reason) for m in merged] == [
        ("m", "1", "READY", "READY on 1 of 3 pods; unloaded (b:1)"),
        ("n", "1", "LOADING", "READY on 0 of 3 pods; unloaded (a:1, c:1)"),
    ]


def test_a_model_no_pod_has_loaded_is_listed_once_without_a_version():
    merged = repository_index.merge({"a:1": index(("m", "", "", "")), "b:1": index(("m", "", "", ""))})
    assert [(m.name, m.version, m.state, m.reason) for m in merged] == [("m", "", "", "READY on 0 of 2 pods")]
