"""The dev stack's OpenSIPS script, its -p environment preprocessor and opensips-run.

OpenSIPS cannot be installed here: where a test needs "the opensips binary" it
stands in a copy of /bin/sh named opensips, which runs the -p command as a child
process the way OpenSIPS 3.6 does (fork + exec, docs/opensips.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from voice_testkit.opensips_peer import LEASE_TICK_S, SCRIPT_SHARED_VARIABLES
from voice_testkit.procs import ROOT

CFG = ROOT / "core" / "opensips" / "opensips.cfg"
PREPROCESSOR = ROOT / "core" / "opensips" / "opensips-cfg-env"
# The modules docs/opensips.md lists for the B2B path (mi_fifo is optional).
B2B_MODULES = {"tm", "rr", "sipmsgops", "signaling", "sl", "cfgutils", "maxfwd", "textops",
               "mi_datagram", "event_datagram", "b2b_entities", "dialog", "uac_auth"}


def preprocess(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PREPROCESSOR)], input=CFG.read_text(), text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=10)


def mpath_of(text: str) -> str:
    match = re.search(r'^mpath="([^"]*)"$', text, re.M)
    assert match, "no mpath line"
    return match.group(1)


def fake_install(prefix: Path, modules: str = "lib64/opensips/modules") -> Path:
    """An OpenSIPS install tree: sbin/opensips (a copy of /bin/sh) and a module dir."""
    binary = prefix / "sbin" / "opensips"
    binary.parent.mkdir(parents=True)
    shutil.copy("/bin/sh", binary)
    (prefix / modules).mkdir(parents=True)
    return binary


def test_script_loads_the_b2b_modules_and_inits_sessions() -> None:
    text = CFG.read_text()
    loaded = set(re.findall(r'^\s*loadmodule\s+"([^"]+)\.so"', text, re.M))
    assert loaded >= B2B_MODULES and loaded - B2B_MODULES == {"proto_udp"}
    assert 'ua_session_server_init($var(b2b_key), "drbh")' in text
    assert re.search(r"^stderror_enabled=yes$", text, re.M)
    assert re.search(r"^socket=udp:127\.0\.0\.1:5060$", text, re.M)
    assert 'modparam("mi_datagram", "socket_name", "udp:127.0.0.1:8080")' in text
    # OpenSIPS has no built-in module directory: the script names one, which the
    # preprocessor (and nix/opensips-config.nix) replace with the binary's own.
    assert re.search(r'^mpath="/usr/local/lib64/opensips/modules/"$', text, re.M)
    # Longer than the bot's longest call (600 s), far shorter than OpenSIPS' 12 h.
    assert 'modparam("b2b_entities", "ua_default_timeout", 900)' in text
    assert text.count("{") == text.count("}")


def test_script_gate_matches_the_double() -> None:
    """The gate's shared variables start as the double's do; the route refuses a new
    call (503, Retry-After) before it would start a session while the gate is shut, and
    an OPTIONS probe the same way; the lease timer ticks as the double's does.
    The real program's behaviour: test_opensips_real.py."""
    text = CFG.read_text()
    declared = dict(re.findall(r'^modparam\("cfgutils", "shvset", "(\w+)=i:(\d+)"\)$', text,
                               re.M))
    assert {name: int(value) for name, value in declared.items()} == SCRIPT_SHARED_VARIABLES
    refuse = text.index("route[refuse_no_core] {")
    assert 'append_to_reply("Retry-After: $shv(ai_retry_after)\\r\\n");' in text[refuse:]
    assert text.index("if ($shv(ai_core) == 2)", refuse) \
        < text.index('send_reply(503, "Service Unavailable (draining)");', refuse) \
        < text.index('send_reply(503, "Service Unavailable (no core)");', refuse)
    options = text.index('if (is_method("OPTIONS")) {')
    invite = text.index('if (!is_method("INVITE")) {')
    closed = "if ($shv(ai_core) != 1) {\n\t\t\troute(refuse_no_core);\n\t\t\texit;"
    assert options < text.index(closed, options) < text.index('send_reply(200, "OK");',
                                                               options) < invite
    gate = text.index("if ($shv(ai_core) != 1) {\n\t\troute(refuse_no_core);\n\t\texit;",
                      invite)
    assert gate < text.index("ua_session_server_init(", gate)
    timer = text.index(f"timer_route[ai_gate_lease, {int(LEASE_TICK_S)}] {{")
    assert text.index("$shv(ai_lease) = $shv(ai_lease) - 1;", timer) \
        < text.index("$shv(ai_retry_after) = 5;", timer) < text.index("$shv(ai_core) = 0;", timer)


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


def test_preprocessor_takes_mpath_and_ua_timeout_from_env(tmp_path: Path) -> None:
    result = preprocess({"OPENSIPS_MPATH": str(tmp_path), "OPENSIPS_UA_TIMEOUT": "120"})
    assert result.returncode == 0, result.stderr
    assert mpath_of(result.stdout) == f"{tmp_path}/"
    assert 'modparam("b2b_entities", "ua_default_timeout", 120)' in result.stdout
    changed = [a for a, b in zip(result.stdout.splitlines(), CFG.read_text().splitlines(),
                                 strict=True) if a != b]
    assert len(changed) == 2


def test_preprocessor_uses_the_running_binarys_module_dir(tmp_path: Path) -> None:
    """Run by OpenSIPS (our parent process), the preprocessor points mpath at that
    binary's own modules, whatever PATH holds."""
    binary = fake_install(tmp_path / "opt")
    result = subprocess.run([str(binary), "-c", '"$0" < "$1"; :', str(PREPROCESSOR), str(CFG)],
                            text=True, capture_output=True, env={"PATH": "/usr/bin:/bin"},
                            timeout=10)
    assert result.returncode == 0, result.stderr
    assert mpath_of(result.stdout) == f"{tmp_path}/opt/lib64/opensips/modules/"


def test_module_dir_of_a_binary(tmp_path: Path) -> None:
    debian = fake_install(tmp_path / "usr", "lib/x86_64-linux-gnu/opensips/modules")
    result = subprocess.run([str(PREPROCESSOR), "--module-dir", str(debian)], text=True,
                            capture_output=True, timeout=10)
    assert (result.returncode, result.stdout) == (
        0, f"{tmp_path}/usr/lib/x86_64-linux-gnu/opensips/modules/\n")
    bare = tmp_path / "bare" / "bin" / "opensips"
    bare.parent.mkdir(parents=True)
    bare.touch()
    result = subprocess.run([str(PREPROCESSOR), "--module-dir", str(bare)], text=True,
                            capture_output=True, timeout=10)
    assert result.returncode == 1 and "no module directory beside" in result.stderr


# OpenSIPS as opensips-run starts it: run the -p preprocessor as a child, as the real
# one does, and show the mpath it got.
FAKE_OPENSIPS = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -f) cfg="$2"; shift ;; -p) pp="$2"; shift ;; esac
  shift
done
"$pp" < "$cfg" | grep '^mpath='
"""


def opensips_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "opensips").write_text(FAKE_OPENSIPS)
    (bindir / "opensips").chmod(0o755)
    return subprocess.run([str(ROOT / "scripts/devstack/opensips-run")], text=True,
                          capture_output=True, timeout=30,
                          env={"PATH": f"{bindir}:/usr/bin:/bin", **env})


def test_opensips_run_names_the_missing_modules(tmp_path: Path) -> None:
    (tmp_path / "lib64" / "opensips" / "modules").mkdir(parents=True)
    (tmp_path / "lib64" / "opensips" / "modules" / "tm.so").touch()
    result = opensips_run(tmp_path)
    assert result.returncode == 1
    assert f"OpenSIPS modules missing from {tmp_path}/lib64/opensips/modules/:" in result.stderr
    assert "b2b_entities.so" in result.stderr and " tm.so" not in result.stderr
    assert "OPENSIPS_MPATH" in result.stderr


def test_opensips_run_without_a_module_dir(tmp_path: Path) -> None:
    result = opensips_run(tmp_path)
    assert result.returncode == 1
    assert "no OpenSIPS module directory beside" in result.stderr


def test_opensips_run_loads_the_binarys_own_modules(tmp_path: Path) -> None:
    modules = tmp_path / "lib64" / "opensips" / "modules"
    modules.mkdir(parents=True)
    for name in B2B_MODULES:
        (modules / f"{name}.so").touch()
    result = opensips_run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert mpath_of(result.stdout) == f"{modules}/"


@pytest.mark.parametrize(("name", "value"), [
    ("OPENSIPS_SIP_PORT", "abc"), ("OPENSIPS_MI_PORT", "70000"), ("OPENSIPS_SIP_PORT", "0"),
    ("OPENSIPS_MI_HOST", "1.2.3.4/evil"), ("OPENSIPS_UA_TIMEOUT", "1h"),
    ("OPENSIPS_UA_TIMEOUT", "0"), ("OPENSIPS_MPATH", "/no/such/dir"),
])
def test_preprocessor_rejects_bad_values(name: str, value: str) -> None:
    result = preprocess({name: value})
    assert result.returncode == 2 and name in result.stderr and result.stdout == ""


def test_preprocessor_is_executable() -> None:
    assert Path(PREPROCESSOR).stat().st_mode & 0o111
