# The repository's parts as build sources, without caches, virtualenvs or the
# egg-info that editable installs leave behind (a build must not see them).
{ lib, root }:
let
  isJunk =
    path: _type:
    let
      base = baseNameOf path;
    in
    builtins.elem base [
      "__pycache__"
      ".venv"
      ".dev"
      ".pytest_cache"
      ".ruff_cache"
      ".mypy_cache"
      "result"
    ]
    || lib.hasSuffix ".egg-info" base
    || lib.hasSuffix ".pyc" base
    || lib.hasPrefix "result-" base;

  clean =
    name: path:
    lib.cleanSourceWith {
      inherit name;
      src = lib.cleanSource path;
      filter = path: type: !(isJunk path type);
    };
in
{
  # The whole checkout: what the test suite runs against.
  repo = clean "opensips-ai-source" root;

  common = clean "voice-common-source" (root + "/services/common");
  asr = clean "opensips-ai-asr-source" (root + "/services/asr-service");
  llm = clean "opensips-ai-llm-source" (root + "/services/llm-service");
  tts = clean "opensips-ai-tts-source" (root + "/services/tts-service");
  core = clean "opensips-ai-core-source" (root + "/core");

  # The stubs are generated again at build time from the .proto contracts (see
  # python.nix), so only the contracts, the package metadata and the generator go in.
  proto = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/shared/proto")
      (root + "/shared/proto_generated/pyproject.toml")
      (root + "/scripts/gen-proto.py")
    ];
  };
}
