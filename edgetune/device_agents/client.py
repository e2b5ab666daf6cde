"""``AgentClient``: talk to one device agent over HTTP (httpx).

- Connection errors (the agent is not reachable yet) are retried with exponential backoff; a request
  that reached the agent is retried only when it is idempotent (GET, HEAD, content-addressed PUT), never
  ``POST /measure``. When the agent dies mid-request or does not answer in time: AgentUnavailable, whose
  ``reached`` says whether the request got to the agent (True: cut mid-request, e.g. by a restart) and
  ``timed_out`` whether it ran past its timeout (the sweep waits out an outage and measures a cut
  request again, see ``edgetune.search.runner``).
- Error bodies map back to exceptions: 401 -> AuthError, protocol major mismatch -> ProtocolMismatch,
  a failed measurement -> MeasurementFailed (with the runtime's text), anything else -> AgentError
  (with ``status_code`` and ``error_type`` attributes).
- Uploads are content-addressed: ``HEAD`` first, so an artifact or dataset is sent once per agent.

Thread safety: one client may be used from several threads (httpx.Client is thread-safe); the fleet's
leases make sure one trial at a time uses a device.
"""

from __future__ import annotations

import hashlib
import io
import json as jsonlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from edgetune import __version__
from edgetune._logging import get_logger
from edgetune._paths import sha256_file
from edgetune.device_agents.bundle import DatasetBundle
from edgetune.device_agents.deploy_protocol import Deployment, DeploymentList, DeployResult, Prediction
from edgetune.device_agents.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    CompareRequest,
    Comparison,
    DeviceInfo,
    ErrorBody,
    Health,
    LatencySpec,
    Measurement,
    MeasureRequest,
    QueueStatus,
    UploadResult,
    check_protocol,
)
from edgetune.errors import AgentError, AgentUnavailable, AuthError, MeasurementFailed, ProtocolMismatch

__all__ = ["AgentClient", "file_sha256"]

log = get_logger(__name__)
_SHA = re.compile(r"^[0-9a-f]{64}$")
_NEVER_REACHED = (httpx.ConnectError, httpx.ConnectTimeout)
_LOST = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout, httpx.WriteTimeout,
         httpx.PoolTimeout, httpx.CloseError)


file_sha256 = sha256_file


class AgentClient:
    """A client for the agent at ``url``.

    ``timeout`` bounds every ordinary request; ``measure_timeout`` bounds ``POST /measure`` (queue wait
    included). ``retries`` / ``backoff``: connection attempts after the first, and the first delay (doubled
    each time). ``verify``: TLS verification (a CA bundle path for self-signed agent certificates).
    """

    def __init__(self, url: str, *, token: str | None = None, name: str | None = None, timeout: float = 30.0,
                 measure_timeout: float = 1800.0, retries: int = 3, backoff: float = 0.25,
                 verify: bool | str = True):
        if not re.match(r"^https?://", url):
            from edgetune.errors import ConfigError

            raise ConfigError(f"agent url must start with http:// or https://, got {url!r}.")
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.token = token
        self.timeout, self.measure_timeout = float(timeout), float(measure_timeout)
        self.retries, self.backoff = int(retries), float(backoff)
        if isinstance(verify, str):  # a CA bundle for a self-signed agent certificate
            import ssl

            verify = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout, verify=verify, headers={
            PROTOCOL_HEADER: PROTOCOL_VERSION, "User-Agent": f"edgetune/{__version__}"})

    # ------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AgentClient({self.name!r}, {self.url!r})"

    def _request(self, method: str, path: str, *, auth: bool = True, idempotent: bool = True,
                 timeout: float | None = None, content: Callable[[], Any] | None = None,
                 json: Any = None, files: Callable[[], dict] | None = None, data: dict | None = None,
                 params: dict | None = None) -> httpx.Response:
        headers = {}
        if auth:
            if not self.token:
                raise AuthError(f"no token for agent {self.name} ({self.url}): export the variable the device's "
                                "`token_env` names (default EDGETUNE_AGENT_TOKEN) with the agent's token, or set "
                                "`token_file:` in its `devices:` entry (the agent prints where its token is when it "
                                "starts; in Python: AgentClient(..., token=...)).")
            headers["Authorization"] = f"Bearer {self.token}"
        delay, last = self.backoff, None
        for attempt in range(self.retries + 1):
            body = content() if content is not None else None
            parts = files() if files is not None else None
            try:
                resp = self._http.request(method, path, headers=headers, content=body, json=json, files=parts,
                                          data=data, params=params, timeout=timeout or self.timeout)
                break
            except _NEVER_REACHED as exc:
                last = exc
            except _LOST as exc:
                if not idempotent:
                    err = AgentUnavailable(f"agent {self.name} ({self.url}) did not answer {method} {path}: "
                                           f"{type(exc).__name__}: {exc or 'connection lost'}. The agent may have "
                                           "died or restarted; check it with `edgetune devices`.")
                    err.reached = True  # type: ignore[attr-defined]
                    err.timed_out = isinstance(exc, httpx.TimeoutException)  # type: ignore[attr-defined]
                    raise err from exc
                last = exc
            finally:
                for obj in (body, *(v[1] for v in (parts or {}).values() if isinstance(v, tuple))):
                    if hasattr(obj, "close"):
                        obj.close()
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        else:
            err = AgentUnavailable(f"agent {self.name} ({self.url}) is unreachable after {self.retries + 1} attempts: "
                                   f"{type(last).__name__}: {last}. Is `edgetune agent serve` running there, and "
                                   "is the url right?")
            err.reached, err.timed_out = False, False  # type: ignore[attr-defined]
            raise err from last
        check_protocol(resp.headers.get(PROTOCOL_HEADER), where=f"the agent at {self.url}")
        if resp.status_code >= 400:
            raise self._error(resp)
        return resp

    def _error(self, resp: httpx.Response) -> AgentError:
        try:
            err = ErrorBody.model_validate(resp.json()).error
            etype, message = err.type, err.message
        except Exception:  # not our error body (a proxy, a 502 page ...)
            etype, message = "HTTPError", f"HTTP {resp.status_code}: {resp.text[:300]}"
        text = f"agent {self.name}: {message}"
        if resp.status_code == 401 or etype == "AuthError":
            exc: AgentError = AuthError(
                f"agent {self.name} refused the token (missing or wrong): check the device's `token_env` / "
                "`token_file` in the sweep config or fleet file against the token the agent was started with "
                "(its --token-file / $EDGETUNE_AGENT_TOKEN).")
        elif etype == "ProtocolMismatch":
            exc = ProtocolMismatch(text)
        elif etype == "MeasurementFailed":
            exc = MeasurementFailed(text)
        else:
            exc = AgentError(text)
        exc.status_code = resp.status_code  # type: ignore[attr-defined]
        exc.error_type = etype  # type: ignore[attr-defined]
        return exc

    # ------------------------------------------------------------ endpoints
    def health(self, *, timeout: float | None = None) -> Health:
        return Health.model_validate(self._request("GET", "/health", auth=False, timeout=timeout).json())

    def info(self) -> DeviceInfo:
        return DeviceInfo.model_validate(self._request("GET", "/info").json())

    def queue(self) -> QueueStatus:
        return QueueStatus.model_validate(self._request("GET", "/queue").json())

    def _has(self, kind: str, sha: str) -> bool:
        try:
            self._request("HEAD", f"/{kind}/{sha}")
        except AgentError as exc:
            if getattr(exc, "status_code", None) == 404:
                return False
            raise
        return True

    def has_artifact(self, sha: str) -> bool:
        return self._has("artifacts", sha)

    def has_dataset(self, sha: str) -> bool:
        return self._has("datasets", sha)

    def _upload(self, kind: str, source: str | Path | bytes) -> str:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
            sha, content = hashlib.sha256(data).hexdigest(), (lambda: data)
        else:
            path = Path(source)
            sha, content = file_sha256(path), (lambda: open(path, "rb"))  # noqa: SIM115 - closed by _request
        if self._has(kind, sha):
            return sha
        resp = self._request("PUT", f"/{kind}/{sha}", content=content)
        result = UploadResult.model_validate(resp.json())
        log.info("uploaded %s %s (%d bytes) to %s", kind[:-1], sha[:12], result.bytes, self.name)
        return sha

    def upload_artifact(self, source: str | Path | bytes) -> str:
        """Upload an ONNX file (skipped when the agent has it); returns its sha256."""
        return self._upload("artifacts", source)

    def upload_dataset(self, bundle: DatasetBundle | str | Path | bytes) -> str:
        """Upload a dataset bundle (skipped when the agent has it); returns its sha256."""
        return self._upload("datasets", bundle.data if isinstance(bundle, DatasetBundle) else bundle)

    def measure(self, artifact: str | Path | bytes, *, dataset: DatasetBundle | str | Path | bytes | None = None,
                latency: LatencySpec | dict | None = None, providers: list[str] | None = None,
                head: Any = None, accuracy: bool = True, runtime: str | None = None,
                timeout_s: float | None = None, reference: str | Path | bytes | None = None,
                reference_runtime: str | None = None, paired_runs: int = 100) -> Measurement:
        """Measure ``artifact`` (an ONNX path/bytes, uploaded if needed, or the sha256 of one already there).

        ``dataset``: a bundle (or its sha256) for accuracy and end-to-end timing on real images;
        ``head``: a DetectHead / ClassifyHead / dict for end-to-end timing without a dataset;
        ``reference``: another model (path/bytes/sha256) timed in turns with this one in the same process
        (``paired_runs`` runs each, on ``reference_runtime``): ``Measurement.paired`` (protocol 1.4).
        """
        sha = artifact if isinstance(artifact, str) and _SHA.match(artifact) else self.upload_artifact(artifact)
        ref = None
        if reference is not None:
            ref = reference if isinstance(reference, str) and _SHA.match(reference) else self.upload_artifact(reference)
        ds = None
        if dataset is not None:
            ds = dataset if isinstance(dataset, str) and _SHA.match(dataset) else self.upload_dataset(dataset)
        spec = latency if isinstance(latency, LatencySpec) else LatencySpec(**(latency or {}))
        head_dict = head.to_dict() if hasattr(head, "to_dict") else head
        req = MeasureRequest(artifact=sha, dataset=ds, latency=spec, providers=tuple(providers) if providers else None,
                             head=head_dict, accuracy=accuracy, runtime=runtime, timeout_s=timeout_s,
                             reference=ref, reference_runtime=reference_runtime, paired_runs=paired_runs)
        body = req.model_dump(mode="json")
        if spec.power_sample_ms is None:  # unset: not sent, so an agent before protocol 1.3 accepts the request
            body["latency"].pop("power_sample_ms", None)
        if ref is None:  # the same for the paired timing of protocol 1.4
            for key in ("reference", "reference_runtime", "paired_runs"):
                body.pop(key, None)
        resp = self._request("POST", "/measure", idempotent=False, json=body, timeout=self.measure_timeout)
        return Measurement.model_validate(resp.json())

    def compare(self, artifacts, *, runs: int = 300, burst: int = 5, warmup: int = 10, threads: int | None = None,
                providers: list[str] | None = None, runtime: str | None = None,
                runtimes: list[str] | None = None, timeout_s: float | None = None) -> Comparison:
        """Time several artifacts (ONNX paths/bytes, uploaded if needed, or sha256s) side by side, interleaved
        in one process on the device (``POST /compare``); ``Comparison.latency`` is keyed by sha256, or by
        ``compare_key(sha256, runtime)`` when ``runtimes`` (one per artifact) are given."""
        shas = [a if isinstance(a, str) and _SHA.match(a) else self.upload_artifact(a) for a in artifacts]
        req = CompareRequest(artifacts=tuple(shas), runs=runs, burst=burst, warmup=warmup, threads=threads,
                             providers=tuple(providers) if providers else None, runtime=runtime,
                             runtimes=tuple(runtimes) if runtimes is not None else None, timeout_s=timeout_s)
        resp = self._request("POST", "/compare", idempotent=False, json=req.model_dump(mode="json"),
                             timeout=self.measure_timeout)
        return Comparison.model_validate(resp.json())

    # ------------------------------------------------------------ deployments
    def _deploy_call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            return self._request(method, path, **kw)
        except AgentError as exc:
            if getattr(exc, "status_code", None) == 404 and getattr(exc, "error_type", None) == "HTTPError":
                raise AgentError(f"agent {self.name} ({self.url}) has no deployment endpoints: its edgetune is older "
                                 'than this one. Upgrade it on the device: pip install -U "edgetune[agent]".') from exc
            raise

    def deploy(self, name: str, model: str | Path | bytes, *, manifest: dict, sha256: str | None = None) -> DeployResult:
        """Push ``model`` (ONNX path or bytes) with its ``manifest`` to the deployment slot ``name``. The agent
        checks the bytes against ``sha256`` (default: computed here) before anything is replaced."""
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
            sha, opener = sha256 or hashlib.sha256(data).hexdigest(), (lambda: io.BytesIO(data))
        else:
            path = Path(model)
            sha, opener = sha256 or file_sha256(path), (lambda: open(path, "rb"))  # noqa: SIM115 - closed by _request
        resp = self._deploy_call("PUT", f"/deployments/{name}", timeout=max(self.timeout, 600.0),
                                 files=lambda: {"model": ("model.onnx", opener(), "application/octet-stream")},
                                 data={"sha256": sha, "manifest": jsonlib.dumps(manifest)})
        return DeployResult.model_validate(resp.json())

    def deployments(self) -> list[Deployment]:
        return DeploymentList.model_validate(self._deploy_call("GET", "/deployments").json()).deployments

    def deployment(self, name: str) -> Deployment:
        return Deployment.model_validate(self._deploy_call("GET", f"/deployments/{name}").json())

    def rollback(self, name: str, *, version: int | None = None) -> Deployment:
        """Activate the previous kept version of ``name`` (or ``version``); returns the deployment."""
        resp = self._deploy_call("POST", f"/deployments/{name}/rollback", idempotent=False,
                                 json={"version": version} if version is not None else None)
        return Deployment.model_validate(resp.json())

    def predict(self, name: str, image: str | Path | bytes, *, score_threshold: float = 0.25) -> Prediction:
        """Run the active version of ``name`` on one image (PNG / JPEG / BMP / WebP file or bytes)."""
        data = bytes(image) if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
        resp = self._deploy_call("POST", f"/deployments/{name}/predict", idempotent=False, timeout=self.measure_timeout,
                                 files=lambda: {"image": ("image", io.BytesIO(data), "application/octet-stream")},
                                 params={"score_threshold": score_threshold})
        return Prediction.model_validate(resp.json())
