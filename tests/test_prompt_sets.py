"""The fidelity harness's prompt sets: the shipped ones, a file of one's own, and how the PartiPrompts sample is
drawn."""

import pytest

from fp8demo import prompt_sets
from fp8demo.errors import UserError


def test_prompt_sets(tmp_path):
    parti = prompt_sets.load("parti200")
    assert len(parti) == len(set(parti)) == 200
    assert 4 <= len(prompt_sets.load("smoke")) <= 6
    own = tmp_path / "mine.txt"
    own.write_text("# a comment\n\n  first prompt  \nsecond # with a hash\n")
    assert prompt_sets.load(str(own)) == ["first prompt", "second # with a hash"]
    own.write_text("# only a comment\n")
    with pytest.raises(UserError, match="--prompts .*no prompts"):
        prompt_sets.load(str(own))
    with pytest.raises(UserError, match="--prompts 'nope': not a prompt set"):
        prompt_sets.load("nope")


def test_the_partiprompts_sample_ships_with_its_licence():
    from importlib import resources

    folder = resources.files("fp8demo").joinpath("data/prompts")
    header = [line for line in folder.joinpath("partiprompts-200.txt").read_text().splitlines() if line[:1] == "#"]
    assert "Apache License 2.0" in " ".join(header) and "seed 0" in " ".join(header)
    licence = folder.joinpath("PARTIPROMPTS-LICENSE.txt").read_text()
    assert "google-research/parti" in licence and "Apache License" in licence and "END OF TERMS" in licence


def test_parti_sample_is_stratified_and_reproducible():
    from benchmarks import parti_sample

    rows = [(f"{c} {i}", c) for c, n in (("a", 50), ("b", 30), ("c", 19), ("d", 1)) for i in range(n)]
    chosen = parti_sample.sample(rows, size=20, seed=0)
    assert chosen == parti_sample.sample(rows, size=20, seed=0)
    counts = {c: sum(1 for _, k in chosen if k == c) for c in "abcd"}
    assert counts == {"a": 10, "b": 6, "c": 4, "d": 0}  # 10 / 6 / 3.8 / 0.2: the largest remainder rounds up
    assert {c for _, c in chosen[:4]} == {"a", "b", "c"}  # the first lines already span the categories
