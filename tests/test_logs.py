"""A quiet terminal: the lines torch's profiler writes straight to stderr and the libraries' long-prompt warnings are
dropped by their exact text; everything else passes."""

import logging
import os

from fp8demo.logs import native_stderr_without


def test_the_profilers_lines_are_dropped_and_every_other_line_passes(capfd):
    with native_stderr_without():
        os.write(2, b"ERROR: External init callback must run in same thread as registerClient (-1327806784 != "
                    b"-605643904)\n")
        os.write(2, b"USDT:2026-12-01 21:25:01 17241:17321 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"ERROR: something else\n")
        os.write(2, b"USDT: profiler_start, but not the profiler's own line\n")
    err = capfd.readouterr().err
    assert "registerClient" not in err and "SyncActivityProfilerHandler" not in err
    assert "ERROR: something else\n" in err and "not the profiler's own line" in err
    os.write(2, b"after\n")  # stderr is itself again
    assert capfd.readouterr().err == "after\n"


def test_a_long_prompt_gets_the_apps_note_not_the_libraries_warnings(tiny_engine, capfd, caplog):
    from fp8demo.request import GenerationRequest

    prompt = ", ".join(["a red fox in an autumn forest with golden leaves"] * 9)
    tiny_engine.pipe.tokenizer.deprecation_warnings.clear()  # transformers warns once per tokenizer
    with caplog.at_level(logging.WARNING):
        tiny_engine.generate(GenerationRequest(prompt, seed=1, steps=1, width=256, height=256))
    printed = capfd.readouterr().err + caplog.text
    assert "indexing errors" not in printed and "was truncated because" not in printed
    notes = [r for r in caplog.records if r.name == "fp8demo.engine" and "CLIP tokens" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0].getMessage()  # the app's own note, one line
