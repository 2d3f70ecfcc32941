"""kopf handlers: each one finds the GatewayConfigs an event concerns and reconciles them.

GatewayConfig changes go through kopf's change handlers, so kopf retries a failed write
(`TemporaryError`) and gives up on a rejected spec (`PermanentError`, after the status says
why). Gateway API objects, Services and Endpoints are only observed (`on.event`): the operator
does not own them, so it stores no handler state on them. A resync task redoes every
GatewayConfig now and then, which also retries what an event handler could not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any

import kopf

from .kube import ApiError, KubeApi
from .reconcile import InvalidGatewayConfig, Reconciler
from .resources import (
    ENDPOINTS,
    GATEWAYCLASSES,
    GATEWAYCONFIGS,
    GATEWAYS,
    SERVICES,
    UDPROUTES,
    ObjKey,
    Resource,
    generation,
    key,
)

logger = logging.getLogger("stunner.operator")

RETRY_DELAY = 5.0
RESYNC_INTERVAL = 60.0


def _rid(res: Resource) -> tuple[str, str, str]:
    return (res.group or "", res.version, res.plural)


def _core(res: Resource) -> tuple[str, str]:
    return (res.version, res.plural)


def configure(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping in the GatewayConfig status (which the CRD preserves), so the
    operator needs no write access to the objects themselves."""
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage()
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True


def reconciler_of(memo: kopf.Memo) -> Reconciler:
    rec = memo.get("reconciler")
    if not isinstance(rec, Reconciler):
        raise kopf.TemporaryError("operator is still starting", delay=RETRY_DELAY)
    return rec


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    if memo.get("api") is None:
        memo["api"] = await KubeApi.connect()
    namespace = os.environ.get("POD_NAMESPACE", "")
    memo["reconciler"] = Reconciler(memo["api"], default_namespace=namespace)
    memo["resync"] = asyncio.create_task(resync(memo["reconciler"], RESYNC_INTERVAL))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    api = memo.get("api")
    if isinstance(api, KubeApi):
        await api.close()


@kopf.on.probe(id="gatewayconfigs")
def probe(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many GatewayConfigs the operator tracks."""
    rec = memo.get("reconciler")
    return len(rec.tracked()) if isinstance(rec, Reconciler) else 0


# --------------------------------------------------------------------------------------------
# GatewayConfig: kopf change handlers, with retries.


@kopf.on.resume(*_rid(GATEWAYCONFIGS))
@kopf.on.create(*_rid(GATEWAYCONFIGS))
@kopf.on.update(*_rid(GATEWAYCONFIGS), field="spec")
async def gatewayconfig_changed(
    namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    try:
        await reconciler_of(memo).reconcile((namespace or "", name))
    except InvalidGatewayConfig as exc:
        raise kopf.PermanentError(str(exc)) from None
    except ApiError as exc:
        if exc.temporary:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from None
        raise kopf.PermanentError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Everything else: observe and redo the GatewayConfigs concerned.


async def redo(rec: Reconciler, gcs: Iterable[ObjKey]) -> list[ObjKey]:
    """Reconcile each; returns the ones that failed and need another go."""
    failed = []
    for gc in sorted(gcs):
        try:
            await rec.reconcile(gc)
        except InvalidGatewayConfig as exc:
            logger.info("%s", exc)  # the status says so; nothing to retry
        except ApiError as exc:
            logger.warning("reconcile of %s/%s failed: %s", *gc, exc)
            failed.append(gc)
    return failed


async def observed(kind: str, event_type: str | None, body: kopf.Body, memo: kopf.Memo) -> None:
    rec = reconciler_of(memo)
    gen = generation(body)
    if event_type == "MODIFIED" and gen is not None and rec.seen_generation(kind, key(body)) == gen:
        return  # a status-only change, most likely our own write
    if kind == "GatewayClass" and event_type != "DELETED":
        await rec.report_class(body)
    await redo(rec, await rec.affected(kind, body))


@kopf.on.event(*_rid(GATEWAYCLASSES))
async def gatewayclass_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await observed("GatewayClass", type, body, memo)


@kopf.on.event(*_rid(GATEWAYS))
async def gateway_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await observed("Gateway", type, body, memo)


@kopf.on.event(*_rid(UDPROUTES))
async def udproute_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await observed("UDPRoute", type, body, memo)


@kopf.on.event(*_core(SERVICES))
async def service_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await observed("Service", type, body, memo)


@kopf.on.event(*_core(ENDPOINTS))
async def endpoints_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await observed("Endpoints", type, body, memo)


async def resync(rec: Reconciler, interval: float) -> None:
    """Redo every GatewayConfig each `interval`, and failed ones sooner; runs until cancelled."""
    failed: list[ObjKey] = []
    while True:
        await asyncio.sleep(RETRY_DELAY if failed else interval)
        try:
            failed = await redo(rec, failed or await rec.all_gatewayconfigs())
        except ApiError as exc:
            logger.warning("resync: cannot list GatewayConfigs: %s", exc)
            failed = []
