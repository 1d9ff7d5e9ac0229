"""Hot reload under the warm parent (voice_common.warm_parent), run for real: a gRPC
service on a free 127.0.0.1 port started as the dev stack starts it
(`python -m voice_common.launch --prefix ECHO reloadpkg`, DEVELOPMENT_MODE=1,
ECHO_HOT_RELOAD=1), its source in a temporary checkout (VOICE_REPO_ROOT).

The service names itself in its health service, `reload.v<VALUE>.by-<PID>`: VALUE from
reloadpkg/version.py (new code shows), PID of the process that ran reloadpkg.warm's
preload() (the warm parent: what a child inherits across the fork).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voice_testkit.procs import (
    Proc,
    base_env,
    free_port,
    health_status,
    python_module,
    running,
    wait_until,
)

SERVICE = '''
import gc

import grpc

import extra_dep  # a "third-party" module (outside the checkout), imported warm
from reloadpkg import version, warm
from voice_testkit.echo_service import EchoSettings
from voice_common.config import load_settings
from voice_common.runtime import ServiceDefinition, run_service


def main() -> int:
    settings = load_settings(EchoSettings)

    def register(server: grpc.aio.Server) -> list[str]:
        collector = (f"gc.parent-{int(warm.PARENT_COLLECTS)}.child-{int(gc.isenabled())}"
                     f".frozen-{int(gc.get_freeze_count() > 0)}")
        return [f"reload.v{version.VALUE}.by-{warm.LOADED_BY}", collector]

    return run_service(ServiceDefinition("reload-svc", settings, register))
'''
WARM = '''
import gc
import os

LOADED_BY = None
PARENT_COLLECTS = None


def preload() -> None:
    global LOADED_BY, PARENT_COLLECTS
    LOADED_BY = os.getpid()
    PARENT_COLLECTS = gc.isenabled()
'''
# The collector's state the service reports: off in the parent, on in the child, which
# inherited the parent's objects frozen (the `gc` module's recipe for fork without exec).
FORK_GC = "gc.parent-0.child-1.frozen-1"


THREADED = '''
import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
'''


@dataclass
class Service:
    proc: Proc
    target: str
    src: Path  # the package's directory
    site: Path  # a folder of "third-party" modules, outside the checkout
    cache: Path  # VOICE_CACHE_DIR

    def serving(self, name: str) -> bool:
        if self.proc.popen.poll() is not None:
            raise RuntimeError(f"exited with {self.proc.popen.returncode}:\n"
                               f"{self.proc.output()}")
        return health_status(self.target, name) == "SERVING"

    def wait_serving(self, value: int, by: int | None = None) -> None:
        name = f"reload.v{value}.by-{by or self.proc.pid}"
        wait_until(lambda: self.serving(name), 90, 0.1, name)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def save(self, name: str, text: str) -> None:
        (self.src / name).write_text(text)


@pytest.fixture
def service(tmp_path: Path, logdir: Path) -> Iterator[Service]:
    root = tmp_path / "checkout"
    src = root / "src" / "reloadpkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "__main__.py").write_text(SERVICE)
    (src / "warm.py").write_text(WARM)
    (src / "version.py").write_text("VALUE = 1\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "extra_dep.py").write_text("")
    port = free_port()
    env = base_env(
        ECHO_PORT=str(port), DEVELOPMENT_MODE="1", ECHO_HOT_RELOAD="1",
        ECHO_WATCH_PATHS=str(root / "src"), ECHO_CRASH_BACKOFF_S="0",
        HOT_RELOAD_QUIET_MS="100", VOICE_REPO_ROOT=str(root),
        VOICE_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=os.pathsep.join([str(root / "src"), str(site),
                                    os.environ.get("PYTHONPATH", "")]),
    )
    args = python_module("voice_common.launch", "--prefix", "ECHO", "reloadpkg")
    with running(args, env, logdir / "warm.log") as proc:
        svc = Service(proc, f"127.0.0.1:{port}", src, site, tmp_path / "cache")
        svc.wait_serving(1)
        # The child's watcher is armed before it imports the service: ready now.
        yield svc


def test_a_save_serves_the_new_code_under_the_same_pid(service: Service) -> None:
    first_child = service.children()
    service.save("version.py", "VALUE = 2\n")
    # New code, a new child, the weights (here: preload's mark) from the same parent.
    service.wait_serving(2)
    assert service.proc.popen.poll() is None
    assert service.children() != first_child
    assert "draining and reloading" in service.proc.output()


def test_the_parent_imports_without_the_collector_and_each_child_has_it_on(
        service: Service) -> None:
    wait_until(lambda: service.serving(FORK_GC), 60, 0.1, FORK_GC)
    service.save("version.py", "VALUE = 2\n")
    service.wait_serving(2)
    wait_until(lambda: service.serving(FORK_GC), 60, 0.1, f"{FORK_GC} after a save")


def test_a_syntax_error_waits_and_the_next_good_save_recovers(service: Service) -> None:
    service.save("version.py", "VALUE = (\n")
    wait_until(lambda: "waiting for a change" in service.proc.output(), 60,
               message="the child to wait for a fix")
    assert f"cannot start: SyntaxError at {service.src / 'version.py'}:1" \
        in service.proc.output()
    assert service.proc.popen.poll() is None  # no crash for the supervisor to see
    service.save("version.py", "VALUE = 3\n")
    service.wait_serving(3)


def test_a_change_to_what_the_parent_imported_starts_it_anew_same_pid(
        service: Service) -> None:
    service.save("warm.py", WARM + "# the loader changed\n")
    wait_until(lambda: "the warm parent starts anew (same PID)" in service.proc.output(), 60,
               message="the parent's re-exec")
    service.save("version.py", "VALUE = 4\n")
    # preload() ran again in the same process, now with the new loader code.
    service.wait_serving(4)
    assert service.proc.output().count("preloaded reloadpkg.warm") == 2


def test_a_dependency_change_exits_for_a_full_restart(service: Service) -> None:
    (service.src.parent / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert service.proc.wait(60) == 0
    assert "a dependency file changed: exiting for a full restart" in service.proc.output()


WARM_WAITING = '''
import gc
import os
import time

LOADED_BY = None
PARENT_COLLECTS = None


def preload() -> None:
    global LOADED_BY, PARENT_COLLECTS
    LOADED_BY = os.getpid()
    PARENT_COLLECTS = gc.isenabled()
    # Holds the parent until the test says go: the child's watcher does not exist yet.
    open(os.environ["RELOAD_TEST_GO"] + ".waiting", "w").close()
    while not os.path.exists(os.environ["RELOAD_TEST_GO"]):
        time.sleep(0.05)
'''


def test_a_dependency_file_saved_while_the_child_starts_still_restarts(
        tmp_path: Path, logdir: Path) -> None:
    """A checkout-level dependency file (constraints.txt) saved after the warm parent
    started and before its child's watcher existed (here: during the parent's preload)
    still ends the process for a full restart, and the log says so. (Its poll took the
    saved file as the starting point, so the save was missed and the child served.)"""
    root = tmp_path / "checkout"
    src = root / "src" / "reloadpkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "__main__.py").write_text(SERVICE)
    (src / "warm.py").write_text(WARM_WAITING)
    (src / "version.py").write_text("VALUE = 1\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "extra_dep.py").write_text("")
    constraints, go = root / "constraints.txt", tmp_path / "go"
    constraints.write_text("numpy==1\n")
    os.utime(constraints, (1, 1))  # long before the parent started
    env = base_env(
        ECHO_PORT=str(free_port()), DEVELOPMENT_MODE="1", ECHO_HOT_RELOAD="1",
        ECHO_WATCH_PATHS=str(root / "src"), ECHO_CRASH_BACKOFF_S="0",
        HOT_RELOAD_QUIET_MS="100", VOICE_REPO_ROOT=str(root),
        VOICE_CACHE_DIR=str(tmp_path / "cache"), RELOAD_TEST_GO=str(go),
        PYTHONPATH=os.pathsep.join([str(root / "src"), str(site),
                                    os.environ.get("PYTHONPATH", "")]),
    )
    args = python_module("voice_common.launch", "--prefix", "ECHO", "reloadpkg")
    with running(args, env, logdir / "warm.log") as proc:
        wait_until(lambda: (tmp_path / "go.waiting").exists() or proc.popen.poll() is not None,
                   60, message="the warm parent in its preload")
        assert proc.popen.poll() is None, proc.output()
        constraints.write_text("numpy==2\n")
        go.touch()
        assert proc.wait(60) == 0, proc.output()
        assert "a dependency file changed: exiting for a full restart" in proc.output()


def test_sigterm_to_the_parent_drains_the_child_and_leaves_nothing(service: Service) -> None:
    (child,) = service.children()
    port = int(service.target.rsplit(":", 1)[1])
    os.kill(service.proc.pid, signal.SIGTERM)  # the parent alone: it forwards
    assert service.proc.wait(60) == 0
    output = service.proc.output()
    assert "reload-svc draining (SIGTERM)" in output and "reload-svc stopped" in output
    assert not Path(f"/proc/{child}").exists()
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))


def test_a_crashing_child_ends_the_parent_with_its_status(service: Service) -> None:
    (child,) = service.children()
    os.kill(child, signal.SIGKILL)
    assert service.proc.wait(60) == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in service.proc.output()


def test_a_module_that_starts_a_thread_stays_out_of_the_warm_parent(service: Service) -> None:
    # The first child imported extra_dep; now its import starts a thread, which a fork
    # would not carry: when the parent learns it from the child it must not keep it.
    (service.site / "extra_dep.py").write_text(THREADED)
    service.save("version.py", "VALUE = 2\n")
    service.wait_serving(2)
    output = service.proc.output()
    assert "importing extra_dep leaves a thread" in output
    assert "the warm parent starts anew (same PID)" in output
    (cached,) = (service.cache / "warm-imports").glob("reloadpkg-*.txt")
    assert "!extra_dep" in cached.read_text().split()
    # From now on the parent forks without it, and the children still import it.
    service.save("version.py", "VALUE = 3\n")
    service.wait_serving(3)
    assert service.proc.output().count("importing extra_dep leaves a thread") == 1
