"""The service's Prometheus metrics (GET /metrics, text exposition format)."""
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

# No "<name>_created" timestamp series beside every counter and histogram:
# they double the page and say nothing a scraper needs (a process setting).
disable_created_metrics()

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("ppfacedet_detect_requests", "POST /v1/detect requests answered, by HTTP status",
                                ["code"], registry=registry)
        self.latency = Histogram("ppfacedet_detect_latency_seconds",
                                 "Arrival to answer of the detections answered with 200", buckets=LATENCY_BUCKETS_S,
                                 registry=registry)
        self.batch_size = Histogram("ppfacedet_batch_size", "Images per network run",
                                    buckets=tuple(range(1, max_batch + 1)), registry=registry)
        self.queue_depth = Gauge("ppfacedet_queue_depth",
                                 "Detection requests accepted and not yet answered (reading, decoding, waiting or "
                                 "in the network)", registry=registry)
        self.rejected = Counter("ppfacedet_rejected_requests",
                                "Detection requests refused or dropped, by reason (queue_full, not_ready, "
                                "timeout, disconnected, bad_input, too_large)", ["reason"], registry=registry)

    def render(self):
        return generate_latest(self.registry)
