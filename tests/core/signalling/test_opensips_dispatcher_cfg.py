"""core/opensips/opensips-dispatcher.cfg: the proxy-mode script for a pool of cores.

OpenSIPS cannot be installed here, so the script is checked against OpenSIPS 3.6's
documented interface (docs/opensips.md, "Proxy mode": which module exports each
function the routes call, the dispatcher's parameters, the db_text table format) and
against the Kamailio script that CI runs the same topology with
(dev/testkit/src/voice_testkit/kamailio/dispatcher.cfg, exercised by tests/e2e/test_dispatcher.py).
"""

from __future__ import annotations

import re
import subprocess

import yaml

from voice_testkit.procs import ROOT

CFG = ROOT / "core" / "opensips" / "opensips-dispatcher.cfg"
DB = ROOT / "core" / "opensips" / "dispatcher-db"
PREPROCESSOR = ROOT / "core" / "opensips" / "opensips-cfg-env"
KAMAILIO_CFG = ROOT / "dev" / "testkit" / "src" / "voice_testkit" / "kamailio" / "dispatcher.cfg"
K8S_OPENSIPS = ROOT / "deploy" / "k8s" / "opensips.yaml"

# Script functions of OpenSIPS 3.6 and the module exporting each (None: the core).
FUNCTIONS = {
    "mf_process_maxfwd_header": "maxfwd", "send_reply": "signaling",
    "has_totag": "sipmsgops", "is_method": "sipmsgops",
    "loose_route": "rr", "record_route": "rr",
    "t_relay": "tm", "t_check_trans": "tm", "t_on_failure": "tm",
    "t_was_cancelled": "tm", "t_check_status": "tm",
    "ds_select_dst": "dispatcher", "ds_next_dst": "dispatcher", "ds_mark_dst": "dispatcher",
    "xlog": None,
}
KEYWORDS = {"if", "route", "failure_route"}
# OpenSIPS 3.6's db_text `dispatcher` table, version 9 (scripts/dbtext/opensips/).
DISPATCHER_HEADER = ("id(int,auto) setid(int) destination(string) socket(string,null) "
                     "state(int) probe_mode(int) weight(string) priority(int) "
                     "attrs(string,null) description(string,null) ")


def modparams(text: str) -> dict[tuple[str, str], str]:
    return {(m, p): v for m, p, v in re.findall(
        r'^\s*modparam\("([^"]+)",\s*"([^"]+)",\s*("?[^")]*"?)\)', text, re.M)}


def routing(text: str) -> list[str]:
    """The route blocks, one stripped line each (comments and blank lines dropped)."""
    lines = text[text.index("route {"):].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_every_function_the_routes_call_comes_from_a_loaded_module() -> None:
    text = CFG.read_text()
    loaded = set(re.findall(r'^loadmodule "([^"]+)\.so"', text, re.M))
    called = set(re.findall(r"\b([a-z_]+)\(", "\n".join(routing(text)))) - KEYWORDS
    assert called <= FUNCTIONS.keys(), called - FUNCTIONS.keys()
    assert {FUNCTIONS[f] for f in called} - {None} <= loaded
    assert {"db_text", "mi_datagram", "proto_udp"} <= loaded
    assert text.count("{") == text.count("}")
    assert re.search(r"^socket=udp:127\.0\.0\.1:5060$", text, re.M)


def test_dispatching_probing_and_failover() -> None:
    text = CFG.read_text()
    params = modparams(text)
    assert params[("dispatcher", "ds_ping_method")] == '"OPTIONS"'
    assert params[("dispatcher", "ds_probing_mode")] == "1"      # probe every core
    assert params[("dispatcher", "ds_probing_threshold")] == "1"  # out at the first failure
    assert params[("dispatcher", "db_url")] == '"text:///var/lib/opensips/db"'
    lines = routing(text)
    assert 'if (!ds_select_dst(1, 4, "f")) {' in lines      # round robin, failover list
    assert "record_route();" in lines and "if (loose_route()) {" in lines
    assert 'if (t_check_status("408|5[0-9][0-9]")) {' in lines
    assert 'ds_mark_dst("p");' in lines and "if (ds_next_dst()) {" in lines
    assert lines.count('t_on_failure("next_core");') == 2    # re-armed for each next core


def test_kamailio_runs_the_same_timings() -> None:
    """CI's Kamailio proxy probes and times out as the OpenSIPS script does by default."""
    opensips = modparams(CFG.read_text())
    kamailio = KAMAILIO_CFG.read_text()
    defines = dict(re.findall(r"^#!define (\w+) (\S+)$", kamailio, re.M))
    assert int(defines["PING_INTERVAL"]) == int(opensips[("dispatcher", "ds_ping_interval")])
    assert int(defines["NO_REPLY_MS"]) == 1000 * int(opensips[("tm", "fr_timeout")])
    kamailio_params = modparams(kamailio)
    assert kamailio_params[("dispatcher", "ds_probing_mode")] == "1"
    assert kamailio_params[("dispatcher", "ds_probing_threshold")] == "1"
    assert 'ds_select_dst("1", "4")' in kamailio and "record_route();" in kamailio


def test_example_table_is_opensips_db_text() -> None:
    assert (DB / "version").read_text().splitlines() == [
        "table_name(string) table_version(int) ", "dispatcher:9"]
    header, *rows = (DB / "dispatcher").read_text().splitlines()
    assert header == DISPATCHER_HEADER
    assert rows
    for row in rows:
        fields = re.split(r"(?<!\\):", row)  # db_text escapes ':' inside values
        assert len(fields) == 10, row
        assert fields[1] == "1" and re.fullmatch(r"sip\\:[\d.]+\\:\d+", fields[2]), row


def test_the_preprocessor_sets_its_sockets_from_the_environment() -> None:
    result = subprocess.run(
        [str(PREPROCESSOR)], input=CFG.read_text(), text=True, capture_output=True,
        env={"PATH": "/usr/bin:/bin", "OPENSIPS_SIP_HOST": "0.0.0.0",
             "OPENSIPS_SIP_PORT": "5070", "OPENSIPS_MI_PORT": "8181"}, timeout=10)
    assert result.returncode == 0, result.stderr
    changed = [a for a, b in zip(result.stdout.splitlines(), CFG.read_text().splitlines(),
                                 strict=True) if a != b]
    assert changed == ["socket=udp:0.0.0.0:5070",
                       'modparam("mi_datagram", "socket_name", "udp:127.0.0.1:8181")']


def test_the_kubernetes_opensips_routes_as_this_script() -> None:
    [config] = [doc for doc in yaml.safe_load_all(K8S_OPENSIPS.read_text())
                if doc and doc["kind"] == "ConfigMap"]
    script = config["data"]["opensips.cfg"]
    assert routing(script) == routing(CFG.read_text())
    ours = modparams(CFG.read_text())
    theirs = modparams(script)
    for key, value in ours.items():
        if key[0] in ("dispatcher", "tm", "rr"):
            assert theirs.get(key) == value, key
