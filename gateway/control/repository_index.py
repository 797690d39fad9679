"""`RepositoryIndex` of the fleet: the pods' indexes merged into one.

Each (model, version) is listed once. Its state is the most available one any pod reports (READY
where it is READY on at least one pod, then LOADING, UNLOADING, UNAVAILABLE, then Triton's empty
state of a model it has not loaded), and its `reason` starts with how many of the pods that answered
have it READY ("READY on 2 of 3 pods"), followed by the reasons the pods gave, each with its pods. A
pod that lists a model without a version (in explicit model-control mode: found in its repository,
never loaded) counts as having none of its versions READY, so a model loaded on some pods only is
still listed once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from tritonclient.grpc import service_pb2

ModelIndex = service_pb2.RepositoryIndexResponse.ModelIndex

_STATES = ("READY", "LOADING", "UNLOADING", "UNAVAILABLE", "")


def _rank(state: str) -> int:
    return _STATES.index(state) if state in _STATES else len(_STATES)


def merge(replies: Mapping[str, service_pb2.RepositoryIndexResponse]) -> list[ModelIndex]:
    """One entry per (name, version) from the index of every pod, keyed by the pod's address."""
    entries: dict[tuple[str, str], dict[str, ModelIndex]] = defaultdict(dict)
    for pod, reply in replies.items():
        for model in reply.models:
            entries[(model.name, model.version)][pod] = model
    versioned = {name for name, version in entries if version}
    merged = []
    for (name, version), by_pod in sorted(entries.items()):
        if not version and name in versioned:
            continue
        state = min((m.state for m in by_pod.values()), key=_rank)
        ready = sum(m.state == "READY" for m in by_pod.values())
        merged.append(ModelIndex(name=name, version=version, state=state,
                                 reason=_reason(ready, len(replies), by_pod)))
    return merged


def _reason(ready: int, pods: int, by_pod: Mapping[str, ModelIndex]) -> str:
    said: dict[str, list[str]] = defaultdict(list)
    for pod, model in sorted(by_pod.items()):
        if model.reason:
            said[model.reason].append(pod)
    parts = [f"READY on {ready} of {pods} pods"]
    parts += [f"{reason} ({', '.join(pods_saying)})" for reason, pods_saying in said.items()]
    return "; ".join(parts)
