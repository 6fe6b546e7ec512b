"""The method registry is zoo's one vocabulary of methods, and each method's declarations
are what its resize really does."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import InvalidInputError, InvalidTargetError, TransformError
from zoo.methods import LEARNGENE_METHODS, METHODS, OPTIONS, check_target, resize

NAMES = list(METHODS)


def _choices(command: str, option: str) -> list[str]:
    from zoo_cli.main import cli

    (param,) = [p for p in cli.commands[command].params if p.name == option]
    return list(param.type.choices)


def _one_line_naming_all(err: Exception, names=NAMES) -> None:
    text = str(err)
    assert "\n" not in text and all(n in text for n in names), text


def test_every_layer_takes_its_method_names_from_the_registry():
    from zoo.api.learngene_format import extract_recipe
    from zoo.defaults import BY_METHOD, DEFAULTS
    from zoo.derive import Recipe

    assert NAMES == ["dwt", "dct", "weight-selection", "hypercloning", "net2net", "scratch"]
    assert _choices("materialize", "method") == NAMES
    assert _choices("extract", "method") == list(LEARNGENE_METHODS) == ["dwt", "dct"]
    for name in NAMES:
        assert Recipe(name).method == name
    recorded = {d.method for d in DEFAULTS.values()}
    recorded |= {d.method for table in BY_METHOD.values() for d in table.values()}
    recorded |= {n for table in BY_METHOD.values() for n in table}
    assert recorded <= set(NAMES)
    # An unknown name is refused in one line naming every known one, at every layer.
    with pytest.raises(InvalidInputError) as err:
        Recipe("select")
    _one_line_naming_all(err.value)
    with pytest.raises(TransformError, match="`method`") as err:
        resize(torch.ones(4, 4), (2, 2), method="tile")
    _one_line_naming_all(err.value)
    with pytest.raises(InvalidInputError) as err:
        check_target("wavelet", {"hidden": 8}, {"hidden": 4})
    _one_line_naming_all(err.value)
    with pytest.raises(InvalidInputError) as err:
        extract_recipe("weight-selection", wavelet=None, levels=None, keep=None)
    _one_line_naming_all(err.value, LEARNGENE_METHODS)


def _refused(fn) -> bool:
    try:
        fn()
    except (TransformError, InvalidTargetError):
        return True
    return False


def test_a_ratio_that_is_not_a_whole_multiple_is_refused_naming_each_axis_sizes():
    """Axes grow from sizes of their own (hidden 32, ffn 88): the refusal gives each its
    own, not the first axis's sizes under every name."""
    source = {"hidden": 32, "ffn": 88, "kv": 16, "layers": 4}
    target = {"hidden": 48, "ffn": 132, "kv": 24, "layers": 4}
    with pytest.raises(InvalidTargetError) as err:
        check_target("hypercloning", source, target)
    message = str(err.value)
    assert "\n" not in message
    assert "hidden 32 -> 48, ffn 88 -> 132 or kv 16 -> 24" in message
    assert "layers" not in message


@pytest.mark.parametrize("name", NAMES)
def test_a_methods_declarations_are_what_its_resize_does(name):
    """Grows, shrinks, whole multiples, random draws and reading the source's values, as
    declared, checked against resize itself; the target check refuses exactly what the
    declarations say."""
    method = METHODS[name]
    assert method.name == name and method.options <= set(OPTIONS)
    assert ("seed" in method.options) == method.random
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(shape, x=x, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return resize(x, shape, method=name, fan_in_axes=(1,), generator=gen)

    assert _refused(lambda: run((12, 16))) == (not method.grows)
    assert _refused(lambda: run((3, 4))) == (not method.shrinks)
    assert _refused(lambda: run((6, 12))) == (not method.grows or method.integer_multiples)
    if method.grows:
        assert (not torch.equal(run((12, 16)), run((12, 16), seed=1))) == method.random
        assert torch.equal(run((12, 16)), run((12, 16), x=2 * x)) == (not method.reads_source)
    source, small, big, uneven = {"hidden": 8}, {"hidden": 4}, {"hidden": 16}, {"hidden": 12}
    assert _refused(lambda: check_target(name, source, big)) == (not method.grows)
    assert _refused(lambda: check_target(name, source, small)) == (not method.shrinks)
    assert _refused(lambda: check_target(name, source, uneven)) == (
        not method.grows or method.integer_multiples
    )
    # Layer-local: each target layer is its source layer resized alone, to the bit; a
    # method that mixes layers gives something else for some layer.
    stack = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    shape = (8, 12, 16) if method.grows else (2, 3, 4)
    gen = torch.Generator().manual_seed(0)
    whole = resize(stack, shape, method=name, fan_in_axes=(2,), layer_axis=0, generator=gen)

    # One generator for every layer, as a derivation draws (random methods draw per call).
    gen = torch.Generator().manual_seed(0)

    def alone(j: int) -> torch.Tensor:
        i = method.source_layer(j, 4, shape[0]) if method.layer_local else j % 4
        part = stack[i : i + 1]
        return resize(
            part, (1, *shape[1:]), method=name, fan_in_axes=(2,), layer_axis=0, generator=gen
        )

    if method.in_source_dtype:
        # Run in bf16, the bits of float32 cast back (rounded once, as a division by 3).
        wide = (8, 18, 24) if method.grows else (2, 3, 4)
        # (Each from the same seed: scratch draws.)
        here, in32 = (
            resize(
                x,
                wide,
                method=name,
                fan_in_axes=(1, 2),
                layer_axis=0,
                generator=torch.Generator().manual_seed(0),
            )
            for x in (stack, stack.float())
        )
        assert here.dtype == torch.bfloat16 and torch.equal(here, in32.to(torch.bfloat16))
    same = all(torch.equal(whole[j : j + 1], alone(j)) for j in range(shape[0]))
    if method.random:
        # A derivation draws signal after signal in name order, never a layer at a time.
        assert not method.layer_local
    else:
        assert same == method.layer_local


def test_options_a_method_does_not_read_are_refused_by_name(registry, tiny_dir):
    src = registry.import_checkpoint(tiny_dir("bert"))
    with pytest.raises(InvalidInputError) as err:
        registry.materialize(src.name, layers=2, hidden=16, method="weighted")
    _one_line_naming_all(err.value)
    for name in NAMES:
        if "wavelet" not in METHODS[name].options:
            with pytest.raises(InvalidInputError, match="wavelet= applies to method=dwt"):
                registry.materialize(src.name, layers=2, hidden=16, method=name, wavelet="db2")
        if "rescale" not in METHODS[name].options:
            with pytest.raises(InvalidInputError, match="rescale= applies to method=dwt or dct"):
                registry.materialize(src.name, layers=2, hidden=16, method=name, rescale="std")
