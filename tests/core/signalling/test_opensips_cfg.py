"""The dev stack's OpenSIPS script and its -p environment preprocessor."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import ROOT

CFG = ROOT / "core" / "opensips" / "opensips.cfg"
PREPROCESSOR = ROOT / "core" / "opensips" / "opensips-cfg-env"
# The modules OPENSIPS-WIRE.md lists for the B2B path (mi_fifo is optional).
B2B_MODULES = {"tm", "rr", "sipmsgops", "signaling", "sl", "cfgutils", "maxfwd", "textops",
               "mi_datagram", "event_datagram", "b2b_entities", "dialog", "uac_auth"}


def preprocess(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PREPROCESSOR)], input=CFG.read_text(), text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=10)


def test_script_loads_the_b2b_modules_and_inits_sessions() -> None:
    text = CFG.read_text()
    loaded = set(re.findall(r'^\s*loadmodule\s+"([^"]+)\.so"', text, re.M))
    assert loaded >= B2B_MODULES and loaded - B2B_MODULES == {"proto_udp"}
    assert 'ua_session_server_init($var(b2b_key), "drbh")' in text
    assert re.search(r"^stderror_enabled=yes$", text, re.M)
    assert re.search(r"^socket=udp:127\.0\.0\.1:5060$", text, re.M)
    assert 'modparam("mi_datagram", "socket_name", "udp:127.0.0.1:8080")' in text
    assert re.search(r'^mpath=".*"$', text, re.M)  # nix/opensips-config.nix rewrites it
    assert text.count("{") == text.count("}")


def test_preprocessor_without_env_keeps_the_script() -> None:
    result = preprocess({})
    assert result.returncode == 0 and result.stdout == CFG.read_text()


def test_preprocessor_takes_ports_and_hosts_from_env() -> None:
    result = preprocess({"OPENSIPS_SIP_PORT": "5099", "OPENSIPS_MI_PORT": "8181",
                         "OPENSIPS_SIP_HOST": "0.0.0.0"})
    assert result.returncode == 0, result.stderr
    assert re.search(r"^socket=udp:0\.0\.0\.0:5099$", result.stdout, re.M)
    assert '"socket_name", "udp:127.0.0.1:8181"' in result.stdout
    changed = [a for a, b in zip(result.stdout.splitlines(), CFG.read_text().splitlines(),
                                 strict=True) if a != b]
    assert len(changed) == 2


@pytest.mark.parametrize(("name", "value"), [
    ("OPENSIPS_SIP_PORT", "abc"), ("OPENSIPS_MI_PORT", "70000"), ("OPENSIPS_SIP_PORT", "0"),
    ("OPENSIPS_MI_HOST", "1.2.3.4/evil"),
])
def test_preprocessor_rejects_bad_values(name: str, value: str) -> None:
    result = preprocess({name: value})
    assert result.returncode == 2 and name in result.stderr and result.stdout == ""


def test_preprocessor_is_executable() -> None:
    assert Path(PREPROCESSOR).stat().st_mode & 0o111
