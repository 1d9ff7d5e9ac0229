# Everything the flake offers for one system, wired together. Each concern has its own
# file beside this one; this file only passes them to each other.
{
  nixpkgs,
  system,
  root, # the repository (the flake's source)
}:
let
  pkgs = import nixpkgs {
    inherit system;
    # CPU only: torch from nixpkgs is built without CUDA unless this says otherwise.
    config = {
      cudaSupport = false;
    };
    overlays = [ ];
  };
  inherit (pkgs) lib;

  source = import ./source.nix { inherit lib root; };
  # models.nix adds the model wheels to the Python set and reads paths back from it.
  python = import ./python.nix { inherit pkgs source models; };
  models = import ./models.nix { inherit pkgs python; };
  opensips = pkgs.callPackage ./opensips.nix { };
  opensipsConfig = import ./opensips-config.nix { inherit pkgs opensips root; };
  devEnv = import ./dev-env.nix {
    inherit
      pkgs
      python
      models
      opensips
      opensipsConfig
      ;
  };
  devShell = import ./devshell.nix { inherit pkgs devEnv; };
  devStack = import ./process-compose.nix { inherit pkgs devEnv; };
  images = import ./images.nix {
    inherit
      pkgs
      python
      models
      opensips
      opensipsConfig
      ;
  };
  checks = import ./checks.nix {
    inherit
      pkgs
      python
      models
      devEnv
      source
      ;
  };
in
{
  inherit
    pkgs
    python
    models
    opensips
    opensipsConfig
    devEnv
    devShell
    devStack
    images
    checks
    ;
}
