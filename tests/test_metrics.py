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


def test_the_app_serves_metrics_that_move_with_a_picture_and_a_refusal(app, client):
    import httpx
    from gradio_client.exceptions import AppError, ValidationError

    service, url = app

    def scrape() -> dict:
        response = httpx.get(url + "metrics", timeout=30)
        assert response.status_code == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(response.text) for s in family.samples}

    def value(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    before = scrape()
    assert value(before, "fp8demo_engines", state="ready") == 1 and value(before, "fp8demo_jobs_running") == 0
    client.predict(prompt="a counted cat", steps=1, aspect_ratio="256x256", api_name="/generate")
    try:
        client.predict(prompt="", steps=1, api_name="/generate")  # refused: an empty prompt
    except (AppError, ValidationError):
        pass
    after = scrape()
    assert value(after, "fp8demo_images_total", face="generate") == value(before, "fp8demo_images_total",
                                                                           face="generate") + 1
    assert value(after, "fp8demo_generation_seconds_count", face="generate") > value(
        before, "fp8demo_generation_seconds_count", face="generate")
    refused = sum(v for (name, _), v in after.items() if name == "fp8demo_refusals_total")
    assert refused > sum(v for (name, _), v in before.items() if name == "fp8demo_refusals_total")


def test_the_grafana_dashboard_reads_only_metrics_the_app_exports():
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parent.parent / "assets" / "grafana" /
                            "fp8demo-dashboard.json").read_text())
    metrics = Metrics(Readings(lambda: 0, lambda: 0, lambda: [{"device": "cuda:0", "state": "ready"}],
                               lambda device: 1))
    metrics.images.labels(face="generate").inc()
    metrics.refusals.labels(reason="busy").inc()
    metrics.errors.labels(kind="server").inc()
    metrics.generation_seconds.labels(face="generate").observe(1.0)
    text = metrics.text()[0].decode()
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"fp8demo_\w+", target["expr"])}
    assert len(dashboard["panels"]) >= 7 and used and used <= exported, used - exported
