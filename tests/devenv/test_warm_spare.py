"""The warm parent's spare (voice_common.warm_spare), run for real: a gRPC service on a
free 127.0.0.1 port started as the dev stack starts it (`python -m voice_common.launch
--prefix ECHO sparepkg`, DEVELOPMENT_MODE=1, ECHO_HOT_RELOAD=1), its source in a
temporary checkout (VOICE_REPO_ROOT).

sparepkg.warm has a `stage()` that starts a thread (as CTranslate2 and onnxruntime do
when they load) and records the PID of the process that ran it, through sparepkg.engine,
a module only the spare imports. The service names itself in its health service
`spare.v<VALUE>.staged-<PID or none>`: VALUE from sparepkg/version.py, PID of the process
that staged what this child took (its own PID when it was the spare).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
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

from sparepkg import version, warm
from voice_testkit.echo_service import EchoSettings
from voice_common.config import load_settings
from voice_common.runtime import ServiceDefinition, run_service


def main() -> int:
    settings = load_settings(EchoSettings)
    staged = warm.take() or "none"

    def register(server: grpc.aio.Server) -> list[str]:
        collector = f"gc.child-{int(gc.isenabled())}.frozen-{int(gc.get_freeze_count() > 0)}"
        return [f"spare.v{version.VALUE}.staged-{staged}", collector]

    return run_service(ServiceDefinition("spare-svc", settings, register))
'''
WARM = '''
_staged = None


def preload() -> None:
    """Nothing the parent may hold."""


def stage() -> None:
    global _staged
    from sparepkg import engine

    _staged = engine.load()


def take():
    global _staged
    staged, _staged = _staged, None
    return staged
'''
ENGINE = '''
import os
import threading
import time


def load() -> int:
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    return os.getpid()
'''

# The service's nice level; the parent starts at 0 (ECHO_START_NICE), the spare loads at it.
SERVING_NICE = 5


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@dataclass
class Service:
    proc: Proc
    target: str
    src: Path

    def serving(self, name: str) -> bool:
        if self.proc.popen.poll() is not None:
            raise RuntimeError(f"exited with {self.proc.popen.returncode}:\n"
                               f"{self.proc.output()}")
        return health_status(self.target, name) == "SERVING"

    def wait(self, predicate: Callable[[], object], timeout: float, message: str) -> None:
        """wait_until, with the service's log in the error (what the parent and spare did)."""
        try:
            wait_until(predicate, timeout, 0.1, message)
        except TimeoutError as err:
            raise TimeoutError(f"{err}; children {self.children()}; log:\n"
                               f"{self.proc.output()[-6000:]}") from None

    def wait_serving(self, value: int, staged: int | str) -> None:
        name = f"spare.v{value}.staged-{staged}"
        self.wait(lambda: self.serving(name), 90, name)

    def children(self) -> dict[int, str]:
        """PID -> /proc/PID/comm of the parent's children."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        found = {}
        for text in path.read_text().split():
            try:
                found[int(text)] = Path(f"/proc/{text}/comm").read_text().strip()
            except OSError:
                continue
        return found

    def spare(self, nth: int = 1) -> int:
        """The PID of the `nth` spare, once it has staged."""
        self.wait(lambda: "warm-spare" in self.children().values()
                  and self.proc.output().count("staged sparepkg.warm") >= nth, 90,
                  f"spare {nth} staged")
        (pid,) = [pid for pid, name in self.children().items() if name == "warm-spare"]
        return pid

    def save(self, name: str, text: str) -> None:
        (self.src / name).write_text(text)


@pytest.fixture
def service(tmp_path: Path, logdir: Path) -> Iterator[Service]:
    root = tmp_path / "checkout"
    src = root / "src" / "sparepkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "__main__.py").write_text(SERVICE)
    (src / "warm.py").write_text(WARM)
    (src / "engine.py").write_text(ENGINE)
    (src / "version.py").write_text("VALUE = 1\n")
    port = free_port()
    env = base_env(
        ECHO_PORT=str(port), DEVELOPMENT_MODE="1", ECHO_HOT_RELOAD="1",
        ECHO_WATCH_PATHS=str(root / "src"), ECHO_CRASH_BACKOFF_S="0",
        HOT_RELOAD_QUIET_MS="100", VOICE_REPO_ROOT=str(root),
        VOICE_CACHE_DIR=str(tmp_path / "cache"), ECHO_NICE=str(SERVING_NICE),
        ECHO_START_NICE="0",
        PYTHONPATH=os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    args = python_module("voice_common.launch", "--prefix", "ECHO", "sparepkg")
    with running(args, env, logdir / "spare.log") as proc:
        svc = Service(proc, f"127.0.0.1:{port}", src)
        svc.wait_serving(1, "none")  # the first child has no spare before it
        yield svc


def test_the_spare_stages_with_threads_and_becomes_the_next_child(service: Service) -> None:
    spare = service.spare()
    assert len(os.listdir(f"/proc/{service.proc.pid}/task")) == 1  # the parent forks alone
    assert len(os.listdir(f"/proc/{spare}/task")) == 2  # the spare holds the thread
    # Levels only rise: the parent at its start level, the spare's load at the service's.
    assert nice_of(service.proc.pid) == os.nice(0)
    assert nice_of(spare) == max(os.nice(0), SERVING_NICE)
    service.save("version.py", "VALUE = 2\n")
    # New code, served by the spare, with what the spare staged before the save.
    service.wait_serving(2, spare)
    assert spare in service.children()
    # The spare, forked from a parent without the collector, turned it on for itself.
    assert service.serving("gc.child-1.frozen-1")
    # And a new spare is ready for the next save.
    following = service.spare(2)
    assert following != spare
    service.save("version.py", "VALUE = 3\n")
    service.wait_serving(3, following)
    assert service.proc.popen.poll() is None


def test_a_save_of_the_staged_code_makes_the_spare_stand_down(service: Service) -> None:
    spare = service.spare()
    (first,) = [pid for pid, name in service.children().items() if name != "warm-spare"]
    service.save("engine.py", ENGINE + "# the loader changed\n")
    # The spare staged the old engine code: it stands down, a plain child serves.
    service.wait(lambda: "the spare's staged code changed (engine.py)" in service.proc.output(),
                 90, "the spare to stand down")
    service.wait(lambda: not ({first, spare} & set(service.children())), 60,
                 "the old child and the spare to end")
    service.wait_serving(1, "none")
    # A new spare stages the new code, and serves the next save.
    following = service.spare(2)
    service.save("version.py", "VALUE = 2\n")
    service.wait_serving(2, following)


def test_sigterm_to_the_parent_leaves_no_spare(service: Service) -> None:
    spare = service.spare()
    os.kill(service.proc.pid, signal.SIGTERM)
    assert service.proc.wait(60) == 0
    assert not Path(f"/proc/{spare}").exists()
