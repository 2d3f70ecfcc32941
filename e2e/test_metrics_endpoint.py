"""`metricsEndpoint` enabled on a running gateway, as the spec's `kubectl patch` does (the
operator rewrites the watched config): Prometheus starts seeing the series without a restart
and without dropping the allocation that was relaying all along.
"""

from __future__ import annotations

import pytest

from e2e.checks import Checker, Recorder
from e2e.live_metrics import enable_metrics_live
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


async def test_enabling_metrics_endpoint_live(local: Target, recorder: Recorder) -> None:
    lab = local.lab
    assert lab is not None
    config = lab.single_udp_config("b", metrics=False)
    endpoint = lab.single_udp_endpoint(config)
    check = Checker(lab.scope("b"), "metricsEndpoint enabled on a running gateway", recorder)
    with lab.running("b", config) as gateway:

        def enable() -> None:
            config.metrics_url = lab.metrics_url("b")
            gateway.write(config)

        await enable_metrics_live(
            check, gateway, endpoint, (local.username, local.password), local.peer, enable
        )
    check.assert_all()
