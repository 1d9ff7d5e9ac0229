# `nix run` / `nix run .#dev-stack`: the dev environment, then `process-compose up`
# with the repository's process-compose.yaml (run from inside the checkout: the
# services run from their sources, editable). Arguments go to `process-compose up`.
{ pkgs, devEnv }:
pkgs.writeShellApplication {
  name = "dev-stack";
  runtimeInputs = devEnv.tools;
  text = ''
    # shellcheck source=/dev/null
    source ${devEnv.script}
    cd "$VOICE_REPO_ROOT"
    if [ ! -f process-compose.yaml ]; then
      echo "dev-stack: no process-compose.yaml in $VOICE_REPO_ROOT (run it from the checkout)" >&2
      exit 1
    fi
    exec process-compose --config process-compose.yaml up "$@"
  '';
}
