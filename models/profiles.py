"""Render model_repository/ for a deployment profile of deploy/model-profiles.yaml.

Configs are parsed and written with Triton's own protobuf schema (`model_config_pb2`, shipped in
tritonclient), so a rendered config is valid by construction and a typo in the profile file is a
clear error, not a server that refuses to load.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = REPO_ROOT / "deploy" / "model-profiles.yaml"
MODEL_REPOSITORY = REPO_ROOT / "model_repository"

KINDS = {"KIND_CPU": mc.ModelInstanceGroup.KIND_CPU, "KIND_GPU": mc.ModelInstanceGroup.KIND_GPU}
FIELDS = {"kind", "count", "max_batch_size", "preferred_batch_sizes", "max_queue_delay_us",
          "max_queue_size", "queue_timeout_us", "warmup", "parameters", "max_candidate_sequences"}
# Triton's queue policy and warmup belong to the dynamic batcher's models: the sequence batcher
# has no queue policy, and a warmup request to it would need a sequence's control inputs.
DYNAMIC_ONLY = {"max_queue_size", "queue_timeout_us", "warmup"}
ENSEMBLE_FIELDS = {"max_batch_size"}


class ProfileError(ValueError):
    """The profile file is wrong: an unknown profile, model or key, or values that do not fit."""


@dataclass(frozen=True)
class ModelProfile:
    max_batch_size: int
    kind: str | None = None
    count: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int | None = None
    # Requests past this many queued ones are refused at once (gRPC UNAVAILABLE from Triton 2.51)
    # instead of queueing without bound; 0 means no limit.
    max_queue_size: int | None = None
    # A request queued longer than this is refused (REJECT) rather than served late.
    queue_timeout_us: int | None = None
    # Zero-filled warmup requests Triton sends each instance before the model is ready, so a new
    # pod turns ready only once its kernels are compiled: input name -> dims (without the batch).
    warmup: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # Values for parameters the model's config already has (a GPU holds more decoder sessions
    # than two CPU cores): name -> string value.
    parameters: tuple[tuple[str, str], ...] = ()
    # Sequences one instance of a sequence-batched model (oldest strategy) serves at once; Triton
    # holds the rest back until one ends, so this is how sequences spread over the instances.
    max_candidate_sequences: int | None = None


def load_profile(name: str, path: Path = PROFILES_FILE) -> dict[str, ModelProfile]:
    document = yaml.safe_load(Path(path).read_text()) or {}
    profiles = document.get("profiles", {})
    if name not in profiles:
        raise ProfileError(f"{path}: no profile {name!r} (have: {', '.join(sorted(profiles))})")
    return {model: _model_profile(name, model, values or {}) for model, values in profiles[name].items()}


def _model_profile(profile: str, model: str, values: dict) -> ModelProfile:
    where = f"profile {profile!r}, model {model!r}"
    unknown = set(values) - FIELDS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(FIELDS)})")
    if "max_batch_size" not in values:
        raise ProfileError(f"{where}: max_batch_size is required")
    entry = ModelProfile(
        max_batch_size=int(values["max_batch_size"]),
        kind=values.get("kind"),
        count=values.get("count"),
        preferred_batch_sizes=tuple(int(n) for n in values.get("preferred_batch_sizes") or ()),
        max_queue_delay_us=values.get("max_queue_delay_us"),
        max_queue_size=values.get("max_queue_size"),
        queue_timeout_us=values.get("queue_timeout_us"),
        warmup=_warmup(where, values.get("warmup")),
        parameters=tuple((str(k), str(v)) for k, v in (values.get("parameters") or {}).items()),
        max_candidate_sequences=values.get("max_candidate_sequences"),
    )
    if entry.kind is not None and entry.kind not in KINDS:
        raise ProfileError(f"{where}: kind must be one of {sorted(KINDS)}, got {entry.kind!r}")
    if entry.count is not None and int(entry.count) < 1:
        raise ProfileError(f"{where}: count must be >= 1, got {entry.count}")
    too_big = [n for n in entry.preferred_batch_sizes if not 1 <= n <= entry.max_batch_size]
    if too_big:
        raise ProfileError(f"{where}: preferred_batch_sizes {too_big} outside 1..max_batch_size {entry.max_batch_size}")
    for name in ("max_queue_size", "queue_timeout_us"):
        value = getattr(entry, name)
        if value is not None and int(value) < 0:
            raise ProfileError(f"{where}: {name} must be >= 0, got {value}")
    if entry.max_candidate_sequences is not None and int(entry.max_candidate_sequences) < 1:
        raise ProfileError(f"{where}: max_candidate_sequences must be >= 1, got {entry.max_candidate_sequences}")
    return entry


def _warmup(where: str, value) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise ProfileError(f"{where}: warmup must map input names to their dims, e.g. {{PIXELS: [3, 224, 224]}}")
    inputs = []
    for name, dims in value.items():
        if not isinstance(dims, list) or not dims or not all(isinstance(d, int) and d > 0 for d in dims):
            raise ProfileError(f"{where}: warmup input {name!r} needs concrete dims (positive integers), got {dims!r}")
        inputs.append((str(name), tuple(dims)))
    return tuple(inputs)


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def apply_profile(config: mc.ModelConfig, entry: ModelProfile) -> mc.ModelConfig:
    """A copy of `config` with the profile's values in place."""
    out = mc.ModelConfig()
    out.CopyFrom(config)
    out.max_batch_size = entry.max_batch_size
    if config.platform == "ensemble":
        return out
    if entry.kind is not None or entry.count is not None:
        del out.instance_group[:]
        group = out.instance_group.add()
        group.kind = KINDS[entry.kind or "KIND_CPU"]
        group.count = int(entry.count or 1)
    _apply_dynamic_only(out, entry)
    unknown = [name for name, _ in entry.parameters if name not in out.parameters]
    if unknown:
        raise ProfileError(f"model {config.name!r}: parameters {unknown} are not in its config.pbtxt")
    for name, value in entry.parameters:
        out.parameters[name].string_value = value
    batcher = _batcher(out)
    if entry.max_candidate_sequences is not None:
        if not (out.HasField("sequence_batching") and out.sequence_batching.HasField("oldest")):
            raise ProfileError(f"model {config.name!r}: max_candidate_sequences needs the sequence batcher's oldest strategy")
        batcher.max_candidate_sequences = int(entry.max_candidate_sequences)
    if batcher is not None:
        del batcher.preferred_batch_size[:]
        batcher.preferred_batch_size.extend(entry.preferred_batch_sizes)
        if entry.max_queue_delay_us is not None:
            batcher.max_queue_delay_microseconds = int(entry.max_queue_delay_us)
    return out


def _apply_dynamic_only(config: mc.ModelConfig, entry: ModelProfile) -> None:
    asked = [name for name in sorted(DYNAMIC_ONLY) if getattr(entry, name) not in (None, ())]
    if not asked:
        return
    if not config.HasField("dynamic_batching"):
        raise ProfileError(f"model {config.name!r}: {asked} need the dynamic batcher, which this model does not use")
    policy = config.dynamic_batching.default_queue_policy
    if entry.max_queue_size is not None:
        policy.max_queue_size = int(entry.max_queue_size)
    if entry.queue_timeout_us is not None:
        policy.default_timeout_microseconds = int(entry.queue_timeout_us)
        policy.timeout_action = mc.ModelQueuePolicy.REJECT
    if entry.warmup:
        _add_warmup(config, entry.warmup)


def _add_warmup(config: mc.ModelConfig, inputs: tuple[tuple[str, tuple[int, ...]], ...]) -> None:
    types = {i.name: i.data_type for i in config.input}
    unknown = [name for name, _ in inputs if name not in types]
    if unknown:
        raise ProfileError(f"model {config.name!r}: warmup names inputs {unknown} it does not have ({sorted(types)})")
    del config.model_warmup[:]
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    for name, dims in inputs:
        warmup.inputs[name].data_type = types[name]
        warmup.inputs[name].dims.extend(dims)
        warmup.inputs[name].zero_data = True


def _batcher(config: mc.ModelConfig):
    if config.HasField("dynamic_batching"):
        return config.dynamic_batching
    if config.HasField("sequence_batching") and config.sequence_batching.HasField("oldest"):
        return config.sequence_batching.oldest
    return None


def render_configs(profile: str, source: Path = MODEL_REPOSITORY, profiles: Path = PROFILES_FILE) -> dict[str, mc.ModelConfig]:
    """Every model's config of `source` with `profile` applied, by model name."""
    entries = load_profile(profile, profiles)
    configs = {path.parent.name: read_config(path) for path in sorted(Path(source).glob("*/config.pbtxt"))}
    missing, extra = set(configs) - set(entries), set(entries) - set(configs)
    if missing or extra:
        raise ProfileError(
            f"profile {profile!r} must name exactly the models of {source}: "
            f"missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    rendered = {name: apply_profile(config, entries[name]) for name, config in configs.items()}
    _check_ensembles(rendered)
    return rendered


def _check_ensembles(configs: dict[str, mc.ModelConfig]) -> None:
    """Triton refuses an ensemble that batches more than one of its steps can take."""
    for name, config in configs.items():
        for step in config.ensemble_scheduling.step:
            limit = configs[step.model_name].max_batch_size
            if config.max_batch_size > limit:
                raise ProfileError(
                    f"ensemble {name!r} has max_batch_size {config.max_batch_size}, "
                    f"over its step {step.model_name!r}'s {limit}"
                )


def render_repository(profile: str, out_dir: Path, source: Path = MODEL_REPOSITORY, profiles: Path = PROFILES_FILE) -> Path:
    """Copy `source` to `out_dir` (replacing it) with every config.pbtxt rendered for `profile`."""
    configs = render_configs(profile, source, profiles)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(source, out_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    header = (
        f"# Generated by `tritonfleet render-models --profile {profile}` from "
        f"deploy/model-profiles.yaml and {Path(source).name}/ -- do not edit.\n"
    )
    for name, config in configs.items():
        (out_dir / name / "config.pbtxt").write_text(header + text_format.MessageToString(config))
    return out_dir
