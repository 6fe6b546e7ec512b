"""Each surface names an argument in its caller's words: a Python call's message names the
parameter (``levels=``), the CLI's the option (``--levels``), from one message."""

from __future__ import annotations

import json
import re

import pytest

from zoo.errors import ConflictError, InvalidInputError, InvalidTargetError

# A flag of the CLI, or a Python parameter as a message names it.
_FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _python(call, cls=InvalidInputError) -> str:
    with pytest.raises(cls) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and not _FLAG.search(text), text
    return text


def _cli(run_cli, code: int, *args: str) -> str:
    got, out, err = run_cli(*args)
    assert (got, out) == (code, ""), (got, out, err)
    assert err.count("\n") == 1 and err.startswith("zoo: error: "), err
    line = err.removeprefix("zoo: error: ").strip()
    assert not re.search(r"\b[a-z_]+=(?!\S*\))", line), line  # no Python keyword
    return line


def test_argument_checks_name_the_parameter_in_python_and_the_option_on_the_cli(
    registry, tiny_dir, run_cli
):
    src = registry.import_checkpoint(tiny_dir("gpt2"), name="src").name
    size = ("materialize", src, "--layers", "1", "--hidden", "16")
    cases = [
        # A whole number's type, then its range (zoo.api.arguments).
        (
            lambda: registry.extract(src, levels=0),
            ("extract", src, "--levels", "0"),
            "levels= must be at least 1, got 0.",
            "--levels must be at least 1, got 0.",
        ),
        # Options with a value named with them.
        (
            lambda: registry.extract(src, method="dct", keep=0.5, levels=2),
            ("extract", src, "--method", "dct", "--levels", "2"),
            "wavelet= and levels= apply to method='dwt', not dct.",
            "--wavelet and --levels apply to --method dwt, not dct.",
        ),
        # A size, whose option is spelled with a hyphen.
        (
            lambda: registry.materialize(src, layers=1, hidden=16, kv_heads=0),
            (*size, "--kv-heads", "0"),
            "target kv_heads= must be a positive integer, got 0.",
            "target --kv-heads must be a positive integer, got 0.",
        ),
        # A yes-or-no option, and one whose value is a path.
        (
            lambda: registry.materialize(src, layers=1, hidden=16, force=True),
            (*size, "--force"),
            "force=True replaces a previous out= folder; give out=.",
            "--force replaces a previous --out folder; give --out.",
        ),
        (
            lambda: registry.materialize(src, layers=1, hidden=16, max_shard_size="1MB"),
            (*size, "--max-shard-size", "1MB"),
            "max_shard_size= applies to out=; give out=.",
            "--max-shard-size applies to --out; give --out.",
        ),
        # Checked once the source is known (the method's options), and a family's rule.
        (
            lambda: registry.materialize(src, layers=1, hidden=16, method="scratch", wavelet="db2"),
            (*size, "--method", "scratch", "--wavelet", "db2"),
            "wavelet= applies to method=dwt only.",
            "--wavelet applies to --method dwt only.",
        ),
        (
            lambda: registry.materialize(src, layers=1, hidden=15, heads=4),
            ("materialize", src, "--layers", "1", "--hidden", "15", "--heads", "4"),
            "hidden=15 is not divisible by heads=4;",
            "--hidden 15 is not divisible by --heads 4;",
        ),
        # An option the CLI spells as another word than the parameter (--from: parent).
        (
            lambda: registry.link(src, src, relation="Bad"),
            ("link", src, "--from", src, "--relation", "Bad"),
            "relation='Bad' is not allowed;",
            "--relation Bad is not allowed;",
        ),
    ]
    for call, args, python, flags in cases:
        cls = InvalidTargetError if "divisible" in python or "target" in python else None
        assert python in _python(call, cls or InvalidInputError)
        assert flags in _cli(run_cli, 2, *args)


def test_an_out_folder_is_named_as_each_caller_gave_it(registry, tiny_dir, run_cli, tmp_path):
    src = registry.import_checkpoint(tiny_dir("gpt2"), name="src").name
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("not zoo's")
    python = _python(
        lambda: registry.export(src, out=out), ConflictError
    )  # its value as Python writes it
    assert python == f"out={str(out)!r} exists and is not empty; pass force=True to replace it."
    line = _cli(run_cli, 4, "export", src, "--out", str(out))
    assert line == f"--out {out} exists and is not empty; pass --force to replace it."
    assert (out / "mine.txt").read_text() == "not zoo's"


def test_a_yes_or_no_parameter_is_named_as_python_writes_it(registry):
    assert _python(lambda: registry.list(include_deleted="no")) == (
        "include_deleted= is True or False, not 'no'."
    )


def test_list_refuses_an_unknown_keyword_in_its_own_name(registry):
    with pytest.raises(TypeError, match=r"^list\(\) got an unexpected keyword argument 'foo'$"):
        registry.list(foo=1)
    with pytest.raises(TypeError, match=r"list\(\) returns every match.*search\(\) gives"):
        registry.list(limit=5)
    assert registry.list(name="nothing*") == []


def test_link_prints_the_artifacts_its_names_resolved_to(registry, tiny_dir, run_cli):
    base = registry.import_checkpoint(tiny_dir("bert"), name="bert-base")
    tuned = registry.import_checkpoint(tiny_dir("bert", seed=1), name="bert-tuned")
    registry.point_alias(tuned.name, "prod")
    code, out, err = run_cli("link", "prod", "--from", base.content_hash[:10])
    assert (code, out) == (0, "bert-base --finetune--> bert-tuned\n"), err
    code, out, err = run_cli("link", "prod", "--from", base.content_hash[:10], "--note", "x")
    assert code == 0 and out == "bert-base --finetune--> bert-tuned\n", err
    assert (
        err == "note: bert-base --finetune--> bert-tuned was declared before; its note stays ''\n"
    )
    code, out, _ = run_cli("link", "prod", "--from", "bert-base", "--json")
    edge = json.loads(out)
    assert (edge["parent_name"], edge["child_name"]) == ("bert-base", "bert-tuned")
    # Names that are registry names and an alias, on a new edge: one statement adds it.
    other = registry.import_checkpoint(tiny_dir("bert", seed=2), name="bert-other")
    code, out, err = run_cli("link", other.name, "--from", "prod", "--relation", "distill")
    assert (code, out) == (0, "bert-tuned --distill--> bert-other\n"), err
    # zoo tag says the artifact its name resolved to as well.
    code, out, _ = run_cli("tag", base.content_hash[:10], "stable")
    assert (code, out) == (0, "stable -> bert-base\n")


def test_what_to_run_is_a_registry_call_in_python_and_a_command_on_the_cli(
    registry, tiny_dir, run_cli, monkeypatch
):
    """A message that says what to run names the Registry call to a Python caller and the
    command to the CLI's, from one text."""
    from zoo.api import plan
    from zoo.errors import NotFoundError

    monkeypatch.setattr(plan, "LISTED", 1)
    names = [registry.import_checkpoint(tiny_dir("bert", seed=s)).name for s in range(2)]
    python = _python(lambda: registry.materialize("bert", layers=2, hidden=16), NotFoundError)
    assert python.endswith(
        f"Extract one with `reg.extract({names[0]!r})`, or name a source: {names[0]} and 1 "
        "more (`reg.list(kind='source', family='bert')`)."
    ), python
    assert registry.list(kind="source", family="bert") != []  # the call it names works
    line = _cli(run_cli, 3, "materialize", "bert", "--layers", "2", "--hidden", "16")
    assert line.endswith(
        f"Extract one with `zoo extract {names[0]}`, or name a source: {names[0]} and 1 "
        "more (`zoo ls --kind source --family bert`)."
    ), line


def test_a_name_that_matches_nothing_says_what_lists_or_imports_it(registry, tiny_dir, run_cli):
    """A Python caller is told the call that lists the registry or imports a Hub model; the
    CLI's, the command; a removed artifact's name, the call that frees it."""
    from zoo.errors import ConflictError, NotFoundError

    python = _python(lambda: registry.show("nothing-here"), NotFoundError)
    assert python.endswith("Run `reg.list()` to see what is registered."), python
    line = _cli(run_cli, 3, "show", "nothing-here")
    assert line.endswith("Run `zoo ls` to see what is registered."), line
    python = _python(lambda: registry.show("org/model"), NotFoundError)
    assert "it: `reg.import_checkpoint('org/model')`." in python, python
    line = _cli(run_cli, 3, "show", "org/model")
    assert "it: `zoo import org/model`." in line, line
    registry.rm(registry.import_checkpoint(tiny_dir("bert"), name="model").name)
    python = _python(
        lambda: registry.import_checkpoint(tiny_dir("gpt2"), name="model"), ConflictError
    )
    assert "`reg.gc()` frees the name" in python, python
    line = _cli(run_cli, 4, "import", str(tiny_dir("gpt2")), "--name", "model")
    assert "`zoo gc` frees the name" in line, line
