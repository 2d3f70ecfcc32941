"""Values shared by stunnerd, the operator, the Helm charts and the e2e harness.

The charts cannot import Python, so tests check that the rendered charts agree with these.
"""

from typing import Final

API_VERSION: Final = "v1alpha1"

# stunnerd defaults (upstream STUNner v1alpha1).
DEFAULT_STUNNERD_NAME: Final = "default-stunnerd"
DEFAULT_REALM: Final = "stunner.l7mp.io"
DEFAULT_PORT: Final = 3478
DEFAULT_MIN_RELAY_PORT: Final = 1 << 15
DEFAULT_MAX_RELAY_PORT: Final = (1 << 16) - 1
DEFAULT_LOGLEVEL: Final = "all:INFO"
DEFAULT_METRICS_PORT: Final = 8080
DEFAULT_HEALTH_PORT: Final = 8086
DEFAULT_HEALTHCHECK_ENDPOINT: Final = "http://:8086"

# Monitoring wiring: what the stunner chart's pods expose and the PodMonitor scrapes.
METRICS_PATH: Final = "/metrics"
METRICS_PORT_NAME: Final = "metrics"
SCRAPE_INTERVAL: Final = "5s"
POD_APP_LABEL: Final = "stunner"

# Control plane to data plane: the operator writes this ConfigMap, stunnerd watches the file.
GATEWAYCONFIG_NAME: Final = "stunner-gatewayconfig"
CONFIGMAP_NAME: Final = "stunnerd-config"
CONFIGMAP_KEY: Final = "stunnerd.conf"
CONFIG_DIR: Final = "/etc/stunnerd"
CONFIG_PATH: Final = f"{CONFIG_DIR}/{CONFIGMAP_KEY}"
CONTROLLER_NAME: Final = "stunner.l7mp.io/gateway-operator"

# TURN lifetimes (RFC 8656), in seconds.
DEFAULT_ALLOCATION_LIFETIME: Final = 600
MAX_ALLOCATION_LIFETIME: Final = 3600
PERMISSION_LIFETIME: Final = 300
CHANNEL_LIFETIME: Final = 600
DEFAULT_GRACE_PERIOD: Final = 3600

# Bound of one TCP/TLS connection's write buffer (admin.limits.stream_write_buffer): 0.8 s of
# a 2.5 Mbit/s video stream, past which queued media is too late to play anyway; 128 stalled
# connections from one source (the per-source cap) hold at most 32 MiB.
DEFAULT_STREAM_WRITE_BUFFER: Final = 256 * 1024
