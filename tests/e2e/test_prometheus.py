"""A real Prometheus scrapes a running aimd while caches are created, downloaded and fail.

Every query of every dashboard panel must return data at some point of the scenario (no panel
silently empty), every metric an alert rule reads must exist, and the alert for repeatedly
failing downloads must fire, with the shipped rules file loaded unchanged. Prometheus scrapes as
deployed: HTTPS, with a ServiceAccount token bound to the shipped aimd-metrics-reader role.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aimd.api import kinds
from aimd.caching.controller import run as run_controller
from aimd.caching.model_cache_plan import RetryPolicy
from aimd.dev.controlplane import ControlPlane, free_port
from aimd.dev.kubelet import LocalKubelet
from aimd.dev.localhub import serve_hub
from aimd.kube.client import KubeClient
from aimd.kube.resources import SERVICE_ACCOUNTS
from aimd.settings import DEFAULT_ALLOWED_ENDPOINTS, Settings
from tests.integration.test_security_metrics import reader_bound_to
from tests.support import REPO, eventually

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs the prometheus server (Debian package prometheus)"
)
RULES = REPO / "manifests" / "prometheus" / "rules.yaml"
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
METRIC = re.compile(r"\b((?:aim|controller_runtime|workqueue|leader_election|rest_client)_[a-z_]+)")


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
# The scrape target's own labels, as Kubernetes service discovery would give aimd's pod.
TARGET_LABELS = {"namespace": "aimd-system", "pod": "aimd-0"}


async def panel_queries(
    http: aiohttp.ClientSession, prom: str, namespace: str
) -> list[tuple[str, str]]:
    """(dashboard/panel/target, PromQL) for every target, with the variables filled in the way
    Grafana fills them: each query variable's values come from Prometheus, and must include the
    namespace the scenario runs in (aimd's own for the controller dashboard)."""
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        chosen: dict[str, str] = {}
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = LABEL_VALUES.match(fill(variable["definition"], chosen))
            assert match, variable["definition"]
            label = match["label"]
            wanted = namespace if "aim_" in match["selector"] else TARGET_LABELS.get(label, "aimd")

            async def offers(
                selector: str = match["selector"], label: str = label, wanted: str = wanted
            ) -> bool:
                result = await query(http, prom, f"group by ({label}) ({selector})")
                return wanted in {series["metric"].get(label) for series in result}

            await eventually(
                offers,
                timeout=120,
                what=f"{path.stem}: ${variable['name']} to offer {wanted}",
            )
            chosen[variable["name"]] = wanted
        panels = list(dashboard["panels"])
        while panels:
            panel = panels.pop()
            panels.extend(panel.get("panels", []))
            for number, target in enumerate(panel.get("targets", [])):
                title = f"{path.stem}/{panel.get('title')}/{panel.get('id')}/{number}"
                queries.append((title, fill(target["expr"], chosen)))
    return queries


def fill(expr: str, chosen: dict[str, str]) -> str:
    for name, value in chosen.items():
        expr = expr.replace(f"${name}", value)
    return expr.replace("$__rate_interval", "30s").replace("$__range", "10m")


def alert_metrics() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {name for expr in exprs for name in METRIC.findall(expr)}


@contextlib.asynccontextmanager
async def prometheus(workdir: Path, target: str, token: str) -> AsyncIterator[str]:
    """Prometheus scraping `target` every second as job "aimd", evaluating the shipped rules;
    over HTTPS with `token`, as the shipped ServiceMonitor does (aimd's certificate is
    self-signed, hence no verification)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "token").write_text(token)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "aimd",
                "honor_labels": True,
                "scheme": "https",
                "authorization": {"credentials_file": str(workdir / "token")},
                "tls_config": {"insecure_skip_verify": True},
                "static_configs": [{"targets": [target], "labels": TARGET_LABELS}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    assert PROMETHEUS is not None
    with (workdir / "prometheus.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            if process.returncode is not None:
                tail = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"prometheus exited with {process.returncode}:\n{tail}")
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{base}/-/ready") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        try:
            # Queried before it listens, it refuses connections: wait for its readiness.
            await eventually(ready, timeout=60, what="prometheus to be ready")
            yield base
        finally:
            process.terminate()
            await process.wait()


async def query(http: aiohttp.ClientSession, base: str, expr: str) -> list[Any]:
    async with http.get(f"{base}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


def template(name: str, *uris: str) -> dict[str, Any]:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMServiceTemplate",
        "metadata": {"name": name},
        "spec": {
            "image": "example.com/serve:1",
            "modelSources": [
                {"modelId": uri.removeprefix("hf://"), "sourceUri": uri, "size": "1Gi"}
                for uri in uris
            ],
        },
    }


async def test_dashboards_and_alerts_see_a_running_aimd(
    kube: KubeClient, namespace: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    metrics_port = free_port()
    token = await scraper_token(kube, namespace, "prometheus")
    async with (
        serve_hub() as hub,
        serve_hub() as slow_hub,
        reader_bound_to(kube, namespace, "prometheus"),
        prometheus(tmp_path / "prometheus", f"127.0.0.1:{metrics_port}", token) as prom,
        aiohttp.ClientSession() as http,
    ):
        settings = Settings(
            kubeconfig=str(control_plane.kubeconfig),
            metrics_bind_address=f"127.0.0.1:{metrics_port}",
            health_probe_bind_address=f"127.0.0.1:{free_port()}",
            leader_elect=True,  # as deployed: the Leader panel and the no-leader alert need it
            leader_election_namespace=namespace,
            allowed_endpoints=(*DEFAULT_ALLOWED_ENDPOINTS, slow_hub.url),
        )
        hub.add_model("org/shared", size_mib=1)
        slow_hub.add_model("org/slow", size_mib=4)
        slow_hub.piece_delay = 0.5  # about 30 s: long enough to be seen in flight
        kubelet = LocalKubelet(
            kube,
            tmp_path / "node",
            server=control_plane.server,
            ca_file=str(control_plane.ca_file),
            namespace=namespace,
            extra_env={"HF_ENDPOINT": hub.url},
        )
        async with asyncio.TaskGroup() as group:
            controller = group.create_task(
                run_controller(
                    settings, "aimd", retries=RetryPolicy(base=1, cap=2), handle_signals=False
                )
            )
            node = group.create_task(kubelet.run())
            try:
                await scenario(kube, namespace, slow_hub.url)
                await every_panel_has_data(http, prom, namespace)
                for name in sorted(alert_metrics()):
                    assert await query(http, prom, f'{name}{{job="aimd"}}'), (
                        f"alert metric {name} has no series"
                    )
                await eventually(
                    lambda: firing(http, prom, "AimdCacheDownloadFailingRepeatedly", namespace),
                    timeout=180,
                    what="AimdCacheDownloadFailingRepeatedly to fire",
                )
            finally:
                controller.cancel()
                node.cancel()


async def scraper_token(kube: KubeClient, namespace: str, account: str) -> str:
    """A token of a ServiceAccount made for Prometheus, as its pod would mount."""
    await kube.create(SERVICE_ACCOUNTS, {"metadata": {"name": account}}, namespace)
    issued = await kube.request(
        "POST",
        SERVICE_ACCOUNTS.path(namespace, account, "token"),
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    token: str = issued["status"]["token"]
    return token


async def scenario(kube: KubeClient, namespace: str, slow_hub: str) -> None:
    """Two templates sharing a source (one download, one reuse), a service on one of them, a
    slow download, and a source that does not exist (fails and retries)."""
    await kube.create(kinds.SERVICE_TEMPLATES, template("first", "hf://org/shared"), namespace)
    await kube.create(kinds.SERVICE_TEMPLATES, template("second", "hf://org/shared"), namespace)
    for name in ("first", "second"):
        await kube.create(
            kinds.TEMPLATE_CACHES,
            {
                "apiVersion": kinds.API_VERSION,
                "kind": "AIMTemplateCache",
                "metadata": {"name": name},
                "spec": {"templateName": name},
            },
            namespace,
        )
    await kube.create(
        kinds.SERVICES,
        {
            "apiVersion": kinds.API_VERSION,
            "kind": "AIMService",
            "metadata": {"name": "chat"},
            "spec": {"templateName": "first", "cacheModel": True},
        },
        namespace,
    )
    for name, uri, env in (
        ("slow", "hf://org/slow", [{"name": "HF_ENDPOINT", "value": slow_hub}]),
        ("missing", f"hf://org/missing-{secrets.token_hex(2)}", []),
    ):
        await kube.create(
            kinds.MODEL_CACHES,
            {
                "apiVersion": kinds.API_VERSION,
                "kind": "AIMModelCache",
                "metadata": {"name": name},
                "spec": {"sourceUri": uri, "size": "1Gi", "env": env},
            },
            namespace,
        )


async def every_panel_has_data(http: aiohttp.ClientSession, prom: str, namespace: str) -> None:
    """Polls until each panel query has returned a non-empty result at least once."""
    waiting = dict(await panel_queries(http, prom, namespace))
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for title, expr in waiting.items():
            if title not in seen and await query(http, prom, expr):
                seen.add(title)
        if seen == set(waiting):
            return
        await asyncio.sleep(1)
    missing = {title: waiting[title] for title in waiting if title not in seen}
    raise AssertionError(f"panels that never had data: {json.dumps(missing, indent=1)}")


async def firing(http: aiohttp.ClientSession, prom: str, alert: str, namespace: str) -> bool:
    async with http.get(f"{prom}/api/v1/alerts") as response:
        alerts = (await response.json())["data"]["alerts"]
    return any(
        a["labels"]["alertname"] == alert
        and a["labels"].get("namespace") == namespace
        and a["state"] == "firing"
        for a in alerts
    )
