"""(No tests here.) What the real-node tests share: object builders for templates whose sources
point at the servers inside the node's namespace, and readers of what the node did."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3

from aimd.api import kinds
from aimd.dev.node import RealNode
from aimd.kube.client import KubeClient
from aimd.kube.resources import JOBS, PERSISTENT_VOLUME_CLAIMS, PODS, SECRETS

T = TypeVar("T")
Object = dict[str, Any]
SYSTEM = "aimd-system"
S3_BUCKET = "models"
S3_SECRET = "s3-credentials"


def eventually_sync(probe: Callable[[], T | None], *, timeout: float = 60.0, what: str = "") -> T:
    """`tests.support.eventually` for synchronous probes (session fixtures)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def hf_source(model_id: str, hub_url: str, size: str | None = None) -> Object:
    """A template source downloaded from the local hub (HF_ENDPOINT in the source's env)."""
    source: Object = {
        "modelId": model_id,
        "sourceUri": f"hf://{model_id}",
        "env": [{"name": "HF_ENDPOINT", "value": hub_url}],
    }
    if size is not None:
        source["size"] = size
    return source


def s3_env(endpoint: str, secret: str = S3_SECRET) -> list[Object]:
    """The AWS SDK's environment for moto inside the node: keys from a Secret, as a user would."""
    return [
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "access-key-id"}},
        },
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "secret-access-key"}},
        },
        {"name": "AWS_ENDPOINT_URL", "value": endpoint},
    ]


def s3_source(model_id: str, endpoint: str, size: str | None = None) -> Object:
    source: Object = {
        "modelId": model_id,
        "sourceUri": f"s3://{S3_BUCKET}/{model_id}",
        "env": s3_env(endpoint),
    }
    if size is not None:
        source["size"] = size
    return source


def s3_secret(namespace: str) -> Object:
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": namespace},
        "data": {"access-key-id": b64("testing"), "secret-access-key": b64("testing")},
    }


def upload_s3_model(endpoint: str, model_id: str, files: dict[str, bytes]) -> None:
    """Puts `files` under s3://models/<model_id>/ on moto (the bucket is made if needed)."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if S3_BUCKET not in existing:
        client.create_bucket(Bucket=S3_BUCKET)
    for name, data in files.items():
        client.put_object(Bucket=S3_BUCKET, Key=f"{model_id}/{name}", Body=data)


def template(name: str, image: str, *sources: Object) -> Object:
    """A namespaced template served by the image's `serve-cache` (it lists what it mounts)."""
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.SERVICE_TEMPLATES.kind,
        "metadata": {"name": name},
        "spec": {"image": image, "port": 8000, "modelSources": list(sources)},
    }


def service(name: str, template_name: str) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.SERVICES.kind,
        "metadata": {"name": name},
        "spec": {"templateName": template_name, "cacheModel": True, "replicas": 1},
    }


def model_cache(name: str, source: Object, **spec: Any) -> Object:
    body: Object = {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.MODEL_CACHES.kind,
        "metadata": {"name": name},
        "spec": {
            "sourceUri": source["sourceUri"],
            "modelId": source["modelId"],
            "env": source.get("env", []),
            **spec,
        },
    }
    if "size" in source:
        body["spec"]["size"] = source["size"]
    return body


def status_of(obj: Object | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("status")


def ready_condition(obj: Object) -> Object:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


async def items(kube: KubeClient, resource: Any, namespace: str, **kw: Any) -> list[Object]:
    listed: list[Object] = (await kube.list(resource, namespace, **kw))["items"]
    return listed


async def caches_by_uri(kube: KubeClient, namespace: str) -> dict[str, Object]:
    return {mc["spec"]["sourceUri"]: mc for mc in await items(kube, kinds.MODEL_CACHES, namespace)}


async def pods_of(kube: KubeClient, namespace: str, selector: str) -> list[Object]:
    return await items(kube, PODS, namespace, label_selector=selector)


async def job_names(kube: KubeClient, namespace: str) -> set[str]:
    return {job["metadata"]["name"] for job in await items(kube, JOBS, namespace)}


async def volume_dir(node: RealNode, kube: KubeClient, namespace: str, claim: str) -> Path:
    """The directory on this machine behind a bound PVC (a `local` PV of the node)."""
    pvc = await kube.get(PERSISTENT_VOLUME_CLAIMS, claim, namespace)
    volume = node.api("GET", f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    return Path(volume["spec"]["local"]["path"])


def files_on(directory: Path) -> dict[str, bytes]:
    """The model files in a volume (aimd's own bookkeeping under .aimd/ left out)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and ".aimd" not in path.relative_to(directory).parts
    }


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def pod_log(node: RealNode, namespace: str, pod: str) -> str:
    """The pod's log through the API server (which asks the kubelet)."""
    text = node.api("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log")
    return str(text)


def served_listing(log: str) -> dict[str, Any]:
    """The JSON `aimd serve-cache` prints after its first line."""
    _, _, body = log.partition("\n")
    start = body.index("{")
    decoder = json.JSONDecoder()
    listing, _ = decoder.raw_decode(body[start:])
    return dict(listing)


async def create_secret(kube: KubeClient, namespace: str) -> None:
    await kube.create(SECRETS, s3_secret(namespace), namespace)
