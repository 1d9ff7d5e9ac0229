"""nix/ stays in step with the project: every dependency a pyproject.toml lists is in the
Nix environment of that package, and OpenSIPS is built with every module the cfg loads."""

from __future__ import annotations

import re
import tomllib

import pytest

from voice_testkit.procs import ROOT

PACKAGES = {
    "proto": "shared/proto_generated",
    "common": "services/common",
    "asr": "services/asr-service",
    "llm": "services/llm-service",
    "tts": "services/tts-service",
    "core": "core",
}
PROJECT_OWN = {"voiceai-proto", "voice-common"}


def _requirement_name(spec: str) -> str:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.strip()).group(0)
    return re.sub(r"[._-]+", "-", name).lower()


def _nix_lists() -> dict[str, set[str]]:
    text = (ROOT / "nix" / "python.nix").read_text()
    section = text.split("thirdParty = ps: {", 1)[1].split("\n  };", 1)[0]
    return {key: set(re.findall(r"ps\.([A-Za-z0-9-]+)", body))
            for key, body in re.findall(r"(\w+) = \[(.*?)\];", section, re.S)}


@pytest.mark.parametrize("key", sorted(PACKAGES))
def test_pyproject_dependencies_are_in_the_nix_environment(key):
    project = tomllib.loads((ROOT / PACKAGES[key] / "pyproject.toml").read_text())["project"]
    wanted = {_requirement_name(d) for d in project.get("dependencies", [])} - PROJECT_OWN
    assert wanted, f"{PACKAGES[key]} lists no third-party dependency?"
    have = _nix_lists()[key]
    assert wanted <= have, f"{PACKAGES[key]}: missing from nix/python.nix: {sorted(wanted - have)}"


def _built_modules() -> set[str]:
    text = (ROOT / "nix" / "opensips.nix").read_text()
    lists = re.findall(r"(modules|builtinModules) = \[(.*?)\];", text, re.S)
    return {m for _, body in lists for m in re.findall(r'"([a-z0-9_]+)"', body)}


def test_opensips_builds_the_b2b_modules():
    built = _built_modules()
    # The B2B UA session path (docs/opensips.md): engine, MI and events over UDP.
    assert {"b2b_entities", "tm", "dialog", "mi_datagram", "event_datagram"} <= built


@pytest.mark.parametrize("name", ["opensips.cfg", "opensips-dispatcher.cfg"])
def test_opensips_builds_every_module_the_cfg_loads(name):
    cfg = ROOT / "core" / "opensips" / name
    loaded = set(re.findall(r'^\s*loadmodule\s+"(?:[^"]*/)?([^"/]+)\.so"', cfg.read_text(), re.M))
    assert loaded, "the cfg loads no module"
    missing = loaded - _built_modules()
    assert not missing, f"{name} loads modules nix/opensips.nix does not build: {sorted(missing)}"
