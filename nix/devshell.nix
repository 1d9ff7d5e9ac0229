# `nix develop`: the tools on PATH and the environment of dev-env.nix.
{ pkgs, devEnv }:
pkgs.mkShell {
  name = "opensips-ai-dev";
  packages = devEnv.tools;
  shellHook = ''
    source ${devEnv.script}
    echo "opensips-ai dev shell: process-compose up | ./scripts/dev-test.sh | python -m <service>"
  '';
}
