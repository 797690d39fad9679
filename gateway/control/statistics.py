"""`ModelStatistics` of the fleet: the pods' answers summed per model and version.

perf_analyzer and Model Analyzer take a snapshot of a model's statistics before and after a run and
report the difference as the server's figures; through the gateway each snapshot has to cover every
pod, or the two come from different pods and the difference means nothing. So every count and
duration is summed (inference and execution counts, each `inference_stats` duration, the batch
statistics per batch size, the response statistics per key, memory per kind and device id), and
`last_inference` is the latest of any pod.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import service_pb2


def add_counts(into, other, keys: frozenset[str] = frozenset()) -> None:
    """Add every integer field of `other` to `into`, recursing into its single sub-messages; the
    fields named in `keys` identify the entry (a batch size) and are left as they are.

    Written over the descriptor so that a duration Triton adds to `InferStatistics` later is summed too.
    """
    for field, value in other.ListFields():
        if field.is_repeated or field.name in keys:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(into, field.name).SetInParent()  # present in the sum where a pod sent it, as Triton does
            add_counts(getattr(into, field.name), value)
        elif field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT64,
                            FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_INT32):
            setattr(into, field.name, getattr(into, field.name) + value)


def add_model(into: service_pb2.ModelStatistics, other: service_pb2.ModelStatistics) -> None:
    """Add one pod's statistics of a model version to the sum so far."""
    into.last_inference = max(into.last_inference, other.last_inference)
    into.inference_count += other.inference_count
    into.execution_count += other.execution_count
    add_counts(into.inference_stats, other.inference_stats)
    batches = {batch.batch_size: batch for batch in into.batch_stats}
    for batch in other.batch_stats:
        if batch.batch_size in batches:
            add_counts(batches[batch.batch_size], batch, keys=frozenset({"batch_size"}))
        else:
            batches[batch.batch_size] = into.batch_stats.add()
            batches[batch.batch_size].CopyFrom(batch)
    memory = {(usage.type, usage.id): usage for usage in into.memory_usage}
    for usage in other.memory_usage:
        if (usage.type, usage.id) in memory:
            memory[(usage.type, usage.id)].byte_size += usage.byte_size
        else:
            memory[(usage.type, usage.id)] = into.memory_usage.add()
            memory[(usage.type, usage.id)].CopyFrom(usage)
    for key, response in other.response_stats.items():
        add_counts(into.response_stats[key], response)


def merge(replies: Iterable[service_pb2.ModelStatisticsResponse]) -> service_pb2.ModelStatisticsResponse:
    """One answer for the fleet: each (model, version) once, with the sum of what the pods counted."""
    merged: dict[tuple[str, str], service_pb2.ModelStatistics] = {}
    for reply in replies:
        for stats in reply.model_stats:
            key = (stats.name, stats.version)
            if key not in merged:
                merged[key] = service_pb2.ModelStatistics(name=stats.name, version=stats.version)
            add_model(merged[key], stats)
    for stats in merged.values():
        stats.batch_stats.sort(key=lambda batch: batch.batch_size)
    return service_pb2.ModelStatisticsResponse(model_stats=[merged[key] for key in sorted(merged)])
