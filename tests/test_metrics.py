"""The operator metrics parse as Prometheus text and move with what happens."""

from prometheus_client.parser import text_string_to_metric_families

from fp8demo.web.metrics import Metrics, Readings


def _samples(metrics: Metrics) -> dict:
    text, content_type = metrics.text()
    assert content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_metrics_parse_and_move():
    state = {"running": 0, "queue": 0}
    engines = [{"device": "cuda:0", "state": "ready"}, {"device": "cuda:1", "state": "failed"}]
    metrics = Metrics(Readings(lambda: state["running"], lambda: state["queue"], lambda: engines,
                               lambda device: 2**30 if device == "cuda:0" else None))
    before = _samples(metrics)
    assert before[("fp8demo_jobs_running", ())] == 0 and before[("fp8demo_queue_length", ())] == 0
    assert before[("fp8demo_engines", (("state", "ready"),))] == 1
    assert before[("fp8demo_engines", (("state", "failed"),))] == 1
    assert before[("fp8demo_device_memory_bytes", (("device", "cuda:0"),))] == 2**30
    assert ("fp8demo_device_memory_bytes", (("device", "cuda:1"),)) not in before  # not measured: not shown

    state.update(running=2, queue=3)
    metrics.images.labels(face="generate").inc()
    metrics.refusals.labels(reason="busy").inc()
    metrics.errors.labels(kind="out-of-memory").inc()
    metrics.generation_seconds.labels(face="generate").observe(1.7)
    after = _samples(metrics)
    assert after[("fp8demo_jobs_running", ())] == 2 and after[("fp8demo_queue_length", ())] == 3
    assert after[("fp8demo_images_total", (("face", "generate"),))] == 1
    assert after[("fp8demo_refusals_total", (("reason", "busy"),))] == 1
    assert after[("fp8demo_errors_total", (("kind", "out-of-memory"),))] == 1
    assert after[("fp8demo_generation_seconds_count", (("face", "generate"),))] == 1
    assert after[("fp8demo_generation_seconds_bucket", (("face", "generate"), ("le", "2.0")))] == 1
