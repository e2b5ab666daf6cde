"""The fleet: the devices a sweep measures on, from a fleet YAML or the sweep's ``devices:`` section.

```yaml
devices:
  - name: orin-nano
    url: http://10.0.0.21:8765
    token_env: EDGETUNE_AGENT_TOKEN      # the variable that holds this agent's token
    kind: jetson-orin                    # optional: inferred from the agent's /info when omitted
    tags: [gpu, lab]
```

:class:`Fleet` owns one :class:`AgentClient` per device, checks health, infers device kinds and leases
devices: ``with fleet.lease("orin-nano") as client:`` gives one trial at a time per device in this
process (the agent's own queue serialises requests from other processes).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgetune._logging import get_logger
from edgetune.device_agents.client import AgentClient
from edgetune.device_agents.protocol import DeviceInfo, Health
from edgetune.errors import AgentError, ConfigError

__all__ = ["DeviceSpec", "FleetSpec", "Device", "Fleet", "load_fleet", "DEFAULT_TOKEN_ENV"]

DEFAULT_TOKEN_ENV = "EDGETUNE_AGENT_TOKEN"
log = get_logger(__name__)


class DeviceSpec(BaseModel):
    """One device of the fleet (a ``devices:`` entry of a sweep or fleet file).

    Same model config as :class:`edgetune.config.Strict` (unknown keys rejected, immutable); it does not
    subclass it because ``edgetune.config`` imports this module for the sweep's ``devices:``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    url: str
    token_env: str | None = DEFAULT_TOKEN_ENV
    token_file: str | None = None
    kind: str | None = None
    tags: tuple[str, ...] = ()
    # more agents on boards of the same kind that share this device's trials (a sweep measures on whichever
    # is free; the paired timing against fp32 on the same board keeps their latencies comparable)
    pool: tuple[str, ...] = ()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [u for u in v if not (u.startswith("http://") or u.startswith("https://"))]
        if bad:
            raise ValueError(f"pool URLs must start with http:// or https://; got {', '.join(map(repr, bad))}")
        return tuple(u.rstrip("/") for u in v)

    def members(self) -> list[DeviceSpec]:
        """This device and its pool, one spec per agent: the first keeps the name, the others are named
        ``<name>~2``, ``<name>~3``, ... (``~`` is not allowed in a device name, so they cannot clash)."""
        return [self.model_copy(update={"pool": ()}),
                *(self.model_copy(update={"name": f"{self.name}~{i}", "url": u, "pool": ()})
                  for i, u in enumerate(self.pool, start=2))]

    def resolve_token(self) -> str | None:
        """The token from ``token_file`` (if set) or the ``token_env`` variable; None when neither has one."""
        if self.token_file:
            path = Path(self.token_file).expanduser()
            if not path.is_file():
                raise ConfigError(f"device '{self.name}': token_file '{path}' does not exist.")
            return path.read_text().strip() or None
        return os.environ.get(self.token_env) if self.token_env else None


class FleetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: tuple[DeviceSpec, ...] = Field(min_length=1)

    @field_validator("devices")
    @classmethod
    def _unique(cls, v: tuple[DeviceSpec, ...]) -> tuple[DeviceSpec, ...]:
        names = [d.name for d in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"device names must be unique; repeated: {', '.join(dup)}")
        return v


def load_fleet(path: str | Path, **client_options) -> Fleet:
    """A Fleet from a fleet YAML (``devices:`` only) or a sweep YAML (its ``devices:`` section)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fleet file '{path}' does not exist. Write one (see docs/agents.md) or pass --fleet.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"fleet file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or "devices" not in raw:
        raise ConfigError(f"fleet file '{path}' must be a mapping with a `devices:` list.")
    is_sweep = "model" in raw or "objectives" in raw
    try:
        spec = FleetSpec.model_validate({"devices": raw["devices"]} if is_sweep else raw)
    except ValidationError as exc:
        from edgetune.errors import format_validation_error

        raise ConfigError(f"fleet file '{path}': {format_validation_error(exc, model=FleetSpec)}") from exc
    return Fleet(spec.devices, **client_options)


class Device:
    """A fleet member: its spec, its client (created on first use) and its lease lock."""

    def __init__(self, spec: DeviceSpec, *, token: str | None, client_options: Mapping):
        self.spec = spec
        self._token = token
        self._options = dict(client_options)
        self._client: AgentClient | None = None
        self._info: DeviceInfo | None = None
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def token(self) -> str | None:
        """The token this device's client sends (None: the agent runs without one)."""
        return self._token

    @property
    def client(self) -> AgentClient:
        if self._client is None:
            self._client = AgentClient(self.spec.url, token=self._token, name=self.spec.name, **self._options)
        return self._client

    def info(self, *, refresh: bool = False) -> DeviceInfo:
        if self._info is None or refresh:
            self._info = self.client.info()
        return self._info

    @property
    def kind(self) -> str:
        """The declared kind, else the kind the agent reports in ``/info``."""
        return self.spec.kind or self.info().kind

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class Fleet:
    """Devices by name. ``tokens`` overrides tokens by device name (local agents pass theirs)."""

    def __init__(self, devices: Sequence[DeviceSpec], *, tokens: Mapping[str, str] | None = None, **client_options):
        spec = FleetSpec(devices=tuple(devices))
        tokens = dict(tokens or {})
        self._devices = {d.name: Device(d, token=tokens.get(d.name) or d.resolve_token(), client_options=client_options)
                         for d in spec.devices}

    @classmethod
    def from_yaml(cls, path: str | Path, **client_options) -> Fleet:
        return load_fleet(path, **client_options)

    def tokens(self) -> dict[str, str]:
        """Device name -> token, for the devices that have one."""
        return {n: d.token for n, d in self._devices.items() if d.token}

    @property
    def names(self) -> list[str]:
        return list(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def __getitem__(self, name: str) -> Device:
        if name not in self._devices:
            raise ConfigError(f"no device named '{name}' in the fleet; devices: {', '.join(self._devices)}.")
        return self._devices[name]

    def client(self, name: str) -> AgentClient:
        return self[name].client

    def health(self, *, timeout: float = 5.0) -> dict[str, Health | Exception]:
        """Health of every device, checked in parallel (an exception in place of a Health when down)."""
        def check(dev: Device) -> Health | Exception:
            try:
                return dev.client.health(timeout=timeout)
            except AgentError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(16, len(self._devices))) as pool:
            return dict(zip(self._devices, pool.map(check, self._devices.values()), strict=True))

    def kind(self, name: str) -> str:
        return self[name].kind

    def select(self, *, kind: str | None = None, tags: Sequence[str] = ()) -> list[Device]:
        """Devices of ``kind`` (declared or inferred) carrying all ``tags``. A device whose kind is not
        declared and that cannot answer ``/info`` is left out (with a warning)."""
        out = []
        for d in self:
            if not set(tags) <= set(d.spec.tags):
                continue
            if kind is not None:
                try:
                    if d.kind != kind:
                        continue
                except AgentError as exc:
                    log.warning("device %s left out of kind=%s: %s", d.name, kind, exc)
                    continue
            out.append(d)
        return out

    @contextlib.contextmanager
    def lease(self, name: str, *, timeout: float | None = None) -> Iterator[AgentClient]:
        """Hold device ``name`` for one trial: other leases of it in this process wait (AgentError after
        ``timeout`` seconds)."""
        dev = self[name]
        if not dev.lock.acquire(timeout=-1 if timeout is None else timeout):
            raise AgentError(f"device '{name}' stayed leased for {timeout} s; another trial is still measuring on it.")
        try:
            yield dev.client
        finally:
            dev.lock.release()

    @contextlib.contextmanager
    def lease_any(self, *, kind: str | None = None, tags: Sequence[str] = (), timeout: float | None = None,
                  poll: float = 0.05) -> Iterator[Device]:
        """Hold the first free device matching ``kind`` / ``tags``."""
        candidates = self.select(kind=kind, tags=tags)
        if not candidates:
            raise ConfigError(f"no device in the fleet has kind={kind!r} and tags={list(tags)}; devices: "
                              f"{', '.join(self._devices)}.")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for dev in candidates:
                if dev.lock.acquire(blocking=False):
                    try:
                        yield dev
                    finally:
                        dev.lock.release()
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise AgentError(f"all {len(candidates)} matching devices stayed leased for {timeout} s.")
            time.sleep(poll)

    def close(self) -> None:
        for dev in self:
            dev.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
