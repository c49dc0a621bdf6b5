"""Application overhead: a /generate request through gradio_client to image bytes at the client, minus the
engine's own time for that request. Target: at most 50 ms at 1024 px. Measured beside it: the framework floor, the
same request cycle against a Gradio endpoint that returns a ready image at once.

    python -m benchmarks.app_overhead    # tiny model, 1024 px -> benchmarks/results/app-overhead-<device>.json
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from pathlib import Path

from benchmarks.results_file import write_result
from fp8demo import config, hardware, logs
from fp8demo.faces.generate.face import face as generate_face
from fp8demo.web.server import launch
from fp8demo.web.service import DemoService


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def framework_floor(size: int, runs: int, warmup: int) -> list[float]:
    """The same request cycle with nothing behind it: a Gradio endpoint that returns a ready image at once."""
    import gradio as gr
    from gradio_client import Client
    from PIL import Image

    image = Image.effect_noise((size, size), 50).convert("RGB")
    with gr.Blocks() as demo:
        prompt, out, seed = gr.Textbox(), gr.Image(format="jpeg", type="pil"), gr.Number()
        gr.Button().click(lambda p: (image, 1), prompt, [out, seed], api_name="noop", concurrency_id="gpu",
                          concurrency_limit=1)
    port = _port()
    demo.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    times = []
    try:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            path, _ = client.predict("x", api_name="/noop")
            Path(path).read_bytes()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        demo.close()
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="tiny")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    logs.configure()
    from gradio_client import Client

    caps = hardware.detect()
    app_cfg = config.AppConfig(engine=config.EngineConfig(model=args.model), port=_port())
    service = DemoService(app_cfg, caps).start(background=False)
    engine_times: list[float] = []
    run = service.engine.run

    def timed(job):
        # the engine's own time: the whole engine call (validation, tokenizers, stages, tensor -> image)
        t0 = time.perf_counter()
        result = run(job)
        engine_times.append(time.perf_counter() - t0)
        return result

    service.engine.run = timed
    face = generate_face(app_cfg.storage)
    demo = face.build(service)
    launch(demo, face, service, app_cfg, block=False)
    client = Client(f"http://127.0.0.1:{app_cfg.port}/", verbose=False)
    aspect = f"{args.size}x{args.size}"
    rows = []
    try:
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            images, *_ = client.predict(prompt="a lighthouse at dusk", seed=i, randomize_seed=False,
                                        steps=args.steps, aspect_ratio=aspect, api_name="/generate")
            size = len(Path(images[0]["image"]).read_bytes())  # the bytes are at the client
            wall = time.perf_counter() - t0
            if i >= args.warmup:
                rows.append({"client_s": wall, "engine_s": engine_times[-1], "overhead_s": wall - engine_times[-1],
                             "image_bytes": size})
    finally:
        demo.close()
    overheads = [r["overhead_s"] for r in rows]
    floor = framework_floor(args.size, args.runs, args.warmup)
    result = {
        "benchmark": "application overhead (gradio_client /generate to image bytes, minus engine time)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": {"name": caps.name, "kind": caps.device, "cpu_count": caps.cpu_count},
        "versions": hardware.versions(),
        "config": vars(args),
        "overhead_ms": {k: round(f(overheads) * 1000, 1)
                        for k, f in (("min", min), ("median", statistics.median), ("max", max))},
        "engine_ms_median": round(statistics.median(r["engine_s"] for r in rows) * 1000, 1),
        "framework_floor_ms": {k: round(f(floor) * 1000, 1)
                               for k, f in (("min", min), ("median", statistics.median), ("max", max))},
        "target_ms": 50,
        "runs": rows,
    }
    out = write_result(result, args.out, "app-overhead", caps.name)
    print(json.dumps({k: result[k] for k in ("overhead_ms", "engine_ms_median", "framework_floor_ms")}), out)


if __name__ == "__main__":
    main()
