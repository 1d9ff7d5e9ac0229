"""The flake parses, its lock pins the nixpkgs of issue 6, and it offers the outputs users need.

Nothing here fetches nixpkgs: the outputs are read by evaluating flake.nix with a nixpkgs
that throws when touched, which works because the output names do not depend on it.
"""

from __future__ import annotations

import json

import pytest

from tests.nix.nixtools import NIX_FILES, eval_json, relative, run_nix
from voice_testkit.procs import ROOT

SYSTEMS = ["aarch64-linux", "x86_64-linux"]
PINNED_NIXPKGS = {
    "owner": "NixOS",
    "repo": "nixpkgs",
    "type": "github",
    "rev": "25f538306313eae3927264466c70d7001dcea1df",
    "lastModified": 1779796641,
    "narHash": "sha256-ZsIrKmhp4vbBXoXXmR/tBXA/UCsAQiJL9vsgZEduhVY=",
}
SERVICE_IMAGES = {"asr-image", "llm-image", "tts-image", "core-image", "opensips-image"}

# Evaluate the flake's outputs with inputs that must never be forced.
OUTPUTS = """
let
  flake = import ./flake.nix;
  out = flake.outputs { self = throw "self was forced"; nixpkgs = throw "nixpkgs was forced"; };
  names = set: builtins.mapAttrs (_: builtins.attrNames) set;
in {
  inputs = builtins.attrNames flake.inputs;
  nixpkgsUrl = flake.inputs.nixpkgs.url;
  top = builtins.attrNames out;
  packages = names out.packages;
  devShells = names out.devShells;
  checks = names out.checks;
  apps = names out.apps;
  appTypes = builtins.mapAttrs (_: a: builtins.mapAttrs (_: app: app.type) a) out.apps;
}
"""


@pytest.mark.parametrize("path", NIX_FILES, ids=relative)
def test_nix_file_parses(path):
    done = run_nix("--parse", str(path))
    assert done.returncode == 0, f"{relative(path)}: {done.stderr}"
    assert done.stdout.strip(), "the parser printed nothing"


def test_nix_directory_has_one_file_per_concern():
    present = {p.name for p in (ROOT / "nix").glob("*.nix")}
    wanted = {"python.nix", "vosk.nix", "piper-tts.nix", "models.nix", "opensips.nix",
              "opensips-config.nix", "images.nix", "devshell.nix", "checks.nix"}
    assert wanted <= present, f"missing: {sorted(wanted - present)}"


def test_flake_lock_pins_nixpkgs():
    lock = json.loads((ROOT / "flake.lock").read_text())
    assert lock["version"] == 7
    root = lock["nodes"][lock["root"]]
    assert root["inputs"] == {"nixpkgs": "nixpkgs"}, "one input: nixpkgs"
    node = lock["nodes"]["nixpkgs"]
    assert node["locked"] == PINNED_NIXPKGS
    assert node["original"] == {"owner": "NixOS", "repo": "nixpkgs", "type": "github",
                                "ref": "nixos-25.11"}
    assert set(lock["nodes"]) == {"root", "nixpkgs"}


def test_flake_outputs_offer_what_users_type():
    out = eval_json(OUTPUTS)
    assert out["inputs"] == ["nixpkgs"]
    assert out["nixpkgsUrl"] == "github:NixOS/nixpkgs/nixos-25.11"
    assert {"packages", "devShells", "checks", "apps"} <= set(out["top"])
    for kind in ("packages", "devShells", "checks", "apps"):
        assert sorted(out[kind]) == SYSTEMS, kind
    for system in SYSTEMS:
        packages = set(out["packages"][system])
        # `nix build .#images` and one image per service.
        assert {"images", "default"} | SERVICE_IMAGES <= packages
        assert {"opensips", "vosk-model-small-en-us"} <= packages
        assert "default" in out["devShells"][system]  # `nix develop`
        assert {"tests", "lint"} <= set(out["checks"][system])  # `nix flake check`
        assert out["appTypes"][system]["default"] == "app"  # `nix run`: process-compose up


def test_images_is_one_derivation_not_a_set():
    """`nix build .#images` fails on an attribute set; it must be a single derivation."""
    text = (ROOT / "nix" / "images.nix").read_text()
    assert "all = pkgs.linkFarm" in text
    flake = (ROOT / "flake.nix").read_text()
    assert "images = p.images.all;" in flake


def test_torch_is_the_cpu_source_build():
    code = "\n".join(line.split("#", 1)[0] for p in NIX_FILES for line in p.read_text().splitlines())
    assert "ps.torch" in code
    assert "torch-bin" not in code
    assert "cudaSupport = false;" in code
