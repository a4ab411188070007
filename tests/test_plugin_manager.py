"""The plugin manager: built-in and entry-point plugins, allow-list, isolation of plugins that fail, duplicate names."""

from __future__ import annotations

import pytest

from plugins.manager import load_plugins

SAMPLES = {name: f"sample_plugins.{name}" for name in ("echo", "twin", "fails_import", "fails_register", "typo")}


def test_a_good_plugin_registers_its_driver():
    plugins = load_plugins(["echo"], SAMPLES)
    assert plugins.loaded == ["echo"]
    assert plugins.problems == []
    spec = plugins.drivers["echo"]
    assert (spec.name, spec.plugin) == ("echo", "echo")


def test_only_enabled_plugins_are_loaded():
    plugins = load_plugins([], SAMPLES)
    assert plugins.loaded == [] and plugins.drivers == {} and plugins.problems == []


def test_none_enables_every_builtin():
    plugins = load_plugins(None, {"echo": SAMPLES["echo"]})
    assert plugins.loaded == ["echo"]


@pytest.mark.parametrize(
    ("name", "stage", "says"),
    [
        ("fails_import", "load", "vendor SDK missing"),
        ("fails_register", "register", "licence check failed"),
        ("typo", "load", "tandem_driverz"),
    ],
)
def test_a_failing_plugin_is_isolated_and_reported(name, stage, says, caplog):
    plugins = load_plugins(["echo", name], SAMPLES)
    assert plugins.loaded == ["echo"]
    assert "echo" in plugins.drivers
    [problem] = plugins.problems
    assert (problem.plugin, problem.stage) == (name, stage)
    assert says in problem.error
    assert plugins.missing() == [name]
    assert sum(name in record.getMessage() for record in caplog.records if record.levelname == "ERROR") == 1


def test_a_duplicate_driver_name_is_refused_and_names_the_owner():
    plugins = load_plugins(["echo", "twin"], SAMPLES)
    assert plugins.drivers["echo"].plugin == "echo"
    [problem] = plugins.problems
    assert problem.plugin == "twin" and "already registered by plugin echo" in problem.error
    assert plugins.loaded == ["echo"]


def test_an_enabled_plugin_that_is_not_installed_is_a_problem():
    plugins = load_plugins(["echo", "acme"], SAMPLES)
    [problem] = plugins.problems
    assert problem.plugin == "acme" and "not installed" in problem.error
    assert plugins.missing() == ["acme"]
