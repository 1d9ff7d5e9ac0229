"""The committed stubs in shared/proto_generated are exactly what scripts/gen-proto.py makes."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from voice_testkit.procs import ROOT


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".pyi")}


def test_committed_stubs_are_fresh(tmp_path):
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-proto.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    committed = ROOT / "shared" / "proto_generated"
    generated, present = _tree(out), _tree(committed)
    assert generated, "the generator wrote nothing"
    missing = generated - present
    assert not missing, f"stubs missing from shared/proto_generated: {sorted(missing)}; run scripts/gen-proto.py"
    stale = [name for name in sorted(generated) if not filecmp.cmp(out / name, committed / name, shallow=False)]
    assert not stale, f"stale stubs {stale}: run scripts/gen-proto.py"


def test_stale_stub_is_detected(tmp_path):
    """The comparison itself notices a proto change that was not regenerated."""
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-proto.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    stub = out / "voiceai" / "tts" / "v1" / "tts_pb2.pyi"
    committed = ROOT / "shared" / "proto_generated" / "voiceai" / "tts" / "v1" / "tts_pb2.pyi"
    assert filecmp.cmp(stub, committed, shallow=False)
    stub.write_text(stub.read_text() + "\n# edited\n")
    assert not filecmp.cmp(stub, committed, shallow=False)


def test_stubs_import_and_name_the_services():
    from voiceai.asr.v1 import asr_pb2
    from voiceai.llm.v1 import llm_pb2
    from voiceai.tts.v1 import tts_pb2

    assert asr_pb2.DESCRIPTOR.services_by_name["Recognizer"].full_name == "voiceai.asr.v1.Recognizer"
    assert llm_pb2.DESCRIPTOR.services_by_name["LanguageModel"].methods_by_name["Generate"].server_streaming
    assert set(tts_pb2.DESCRIPTOR.services_by_name["Synthesizer"].methods_by_name) == {"Synthesize", "ListVoices"}
