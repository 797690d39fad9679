"""The local stack's description: one YAML file, validated into frozen objects.

Kept apart from the supervisor so a typo in the file fails before anything starts, with the
service and key it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

KINDS = ("triton", "command", "prometheus")


class StackConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    kind: str
    replicas: int = 1
    model_repository: Path | None = None
    args: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    ready_url: str | None = None
    metrics_path: str | None = None
    optional: bool = False
    scrape_interval: str = "5s"
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackConfig:
    name: str
    root: Path
    services: tuple[ServiceSpec, ...] = field(default_factory=tuple)

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(name)


def load_stack_config(path: Path, root: Path | None = None) -> StackConfig:
    """Read and validate a stack file; relative paths resolve against `root` (default: the repo)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StackConfigError(f"{path}: {exc}") from None
    root = Path(root) if root else path.resolve().parent.parent
    return parse_stack_config(data, root, source=str(path))


def parse_stack_config(data: object, root: Path, source: str = "stack") -> StackConfig:
    if not isinstance(data, dict) or not isinstance(data.get("services"), list):
        raise StackConfigError(f"{source}: expected a mapping with a 'services' list")
    services = []
    seen: set[str] = set()
    for index, raw in enumerate(data["services"]):
        spec = _parse_service(raw, root, f"{source}: services[{index}]")
        if spec.name in seen:
            raise StackConfigError(f"{source}: service name '{spec.name}' is used twice")
        seen.add(spec.name)
        services.append(spec)
    return StackConfig(name=str(data.get("name", "local")), root=root, services=tuple(services))


_KEYS = {
    "name", "kind", "replicas", "model_repository", "args", "argv", "ready_url",
    "metrics_path", "optional", "scrape_interval", "ports",
}


def _parse_service(raw: object, root: Path, where: str) -> ServiceSpec:
    if not isinstance(raw, dict):
        raise StackConfigError(f"{where}: expected a mapping")
    unknown = set(raw) - _KEYS
    if unknown:
        raise StackConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("name")
    kind = raw.get("kind")
    if not isinstance(name, str) or not name:
        raise StackConfigError(f"{where}: 'name' is required")
    where = f"{where} ({name})"
    if kind not in KINDS:
        raise StackConfigError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    replicas = raw.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 1:
        raise StackConfigError(f"{where}: 'replicas' must be a positive integer")
    repo = raw.get("model_repository")
    if kind == "triton":
        if not repo:
            raise StackConfigError(f"{where}: a triton service needs 'model_repository'")
        repo = (root / repo).resolve()
        if not repo.is_dir():
            raise StackConfigError(f"{where}: model repository {repo} does not exist")
    if kind == "command" and not raw.get("argv"):
        raise StackConfigError(f"{where}: a command service needs 'argv'")
    return ServiceSpec(
        name=name,
        kind=kind,
        replicas=replicas,
        model_repository=repo,
        args=tuple(str(a) for a in raw.get("args", [])),
        argv=tuple(str(a) for a in raw.get("argv", [])),
        ready_url=raw.get("ready_url"),
        metrics_path=raw.get("metrics_path"),
        optional=bool(raw.get("optional", False)),
        scrape_interval=str(raw.get("scrape_interval", "5s")),
        ports=tuple(str(p) for p in raw.get("ports", [])),
    )
