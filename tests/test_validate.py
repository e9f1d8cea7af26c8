"""csp.validate: one message format, did-you-mean hints, and settings dataclasses whose field
defaults are the only defaults."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from csp.errors import InputError
from csp.validate import Section, fail, integer, mapping, number, read, setting, string, to_yaml


@dataclass(frozen=True)
class Demo:
    """A settings dataclass as the schema modules write them."""

    level: int = setting(choices=(2, 4, 6))
    width: float = setting(4.0, key="window", positive=True)
    pressure: float = setting(0.0, unit=10.0)
    steps: int = setting(500, lo=1, hi=1000)
    limit: int | None = setting(None, lo=1)
    name: str = setting("bfgs", choices=("bfgs", "fire"))
    on: bool = setting(True)
    internal: int = 7   # not a setting: not a YAML key


def message(call, *args, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        call(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_one_message_format():
    assert message(fail, "a.b[1].c", "went wrong") == "key 'a.b[1].c': went wrong"
    assert message(fail, "", "the file is empty") == "the file is empty"
    assert message(integer, 4.5, "x.n", lo=1) == "key 'x.n': expected an integer >= 1, got 4.5"
    assert message(integer, 30, "x.n", lo=1, hi=24) == "key 'x.n': expected an integer in 1..24, got 30"
    assert message(integer, True, "x.n") == "key 'x.n': expected an integer, got True"
    assert message(number, -1, "x.f", positive=True) == "key 'x.f': expected a positive number, got -1"
    assert message(number, float("nan"), "x.f") == "key 'x.f': expected a number, got nan"
    assert message(string, "lbfgs", "x.o", ("bfgs", "fire")).startswith(
        "key 'x.o': expected one of bfgs, fire, got 'lbfgs' (did you mean 'bfgs'?)")


def test_unknown_keys_name_themselves_with_a_hint():
    text = message(mapping, {"max_atom": 4}, "candidates.enumerate", ("max_atoms", "min_atoms"))
    assert text == ("key 'candidates.enumerate.max_atom': unknown key (did you mean 'max_atoms'?); "
                    "allowed: max_atoms, min_atoms")
    assert message(mapping, {"zzz": 1}, "", ("name",)) == "key 'zzz': unknown key; allowed: name"
    assert message(mapping, [1], "sec", ("a",)) == "key 'sec': expected a mapping with keys a, got list"
    assert mapping(None, "sec", ("a",)) == {}


def test_section_takes_defaults_from_the_dataclass():
    demo = read(Demo, {"level": 4}, "demo")
    assert demo == Demo(level=4)
    assert (demo.width, demo.steps, demo.limit, demo.internal) == (4.0, 500, None, 7)


def test_section_checks_keys_units_and_limits():
    demo = read(Demo, {"level": 2, "window": 3, "pressure": 2.0, "limit": None, "name": "fire", "on": False}, "d")
    assert (demo.width, demo.pressure, demo.limit, demo.name, demo.on) == (3.0, 20.0, None, "fire", False)
    assert message(read, Demo, {}, "d") == "key 'd.level': missing (required)"
    assert message(read, Demo, {"level": 3}, "d").startswith("key 'd.level': expected one of 2, 4, 6, got 3")
    assert message(read, Demo, {"level": 2, "windw": 1.0}, "d").startswith(
        "key 'd.windw': unknown key (did you mean 'window'?)")
    assert message(read, Demo, {"level": 2, "internal": 1}, "d").startswith("key 'd.internal': unknown key")
    assert message(read, Demo, {"level": 2, "steps": 0}, "d") == "key 'd.steps': expected an integer in 1..1000, got 0"
    assert message(read, Demo, {"level": 2, "on": "yes"}, "d") == "key 'd.on': expected true or false, got 'yes'"


def test_to_yaml_reads_back():
    demo = Demo(level=6, width=2.5, pressure=30.0, limit=3)
    assert to_yaml(demo) == {"level": 6, "window": 2.5, "pressure": 3.0, "steps": 500, "limit": 3,
                             "name": "bfgs", "on": True}
    assert read(Demo, to_yaml(demo), "d") == demo


def test_extra_keys_and_given_fields():
    sec = Section({"level": 4, "seed": 9}, "d", Demo, extra=("seed",))
    assert "seed" in sec and sec.get("seed") == 9 and sec.path("seed") == "d.seed"
    assert sec.build(Demo, width=1.5) == Demo(level=4, width=1.5)
