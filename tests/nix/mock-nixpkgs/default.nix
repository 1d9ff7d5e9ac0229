# A stand-in for nixpkgs, for evaluating the flake where nixpkgs cannot be fetched.
#
# It offers only the attributes nix/ uses, each checked against nixpkgs' source of the
# nixos-25.11 era (see docs/nix.md): a name nix/ asks for that is not here fails the
# evaluation, as a misspelt attribute would with the real nixpkgs. Builders return
# fake derivations whose `args` record what they were given, so tests can read them.
# Nothing here builds anything; what a real build does is not tested by this.
{
  system,
  config ? { },
  overlays ? [ ],
}:
let
  b = builtins;

  lib = rec {
    fix =
      f:
      let
        x = f x;
      in
      x;
    extends =
      overlay: f: final:
      let
        prev = f final;
      in
      prev // overlay final prev;
    composeExtensions =
      f: g: final: prev:
      let
        fApplied = f final prev;
        prev' = prev // fApplied;
      in
      fApplied // g final prev';
    composeManyExtensions = b.foldl' composeExtensions (_: _: { });
    hasSuffix =
      suffix: s:
      let
        ls = b.stringLength s;
        lx = b.stringLength suffix;
      in
      ls >= lx && b.substring (ls - lx) lx s == suffix;
    hasPrefix = prefix: s: b.substring 0 (b.stringLength prefix) s == prefix;
    concatStringsSep = b.concatStringsSep;
    concatMapStringsSep = sep: f: l: b.concatStringsSep sep (map f l);
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    mapAttrsToList = f: a: map (n: f n a.${n}) (b.attrNames a);
    genAttrs =
      names: f:
      b.listToAttrs (
        map (n: {
          name = n;
          value = f n;
        }) names
      );
    makeBinPath = l: b.concatStringsSep ":" (map (p: "${p}/bin") l);
    getExe = p: "${p}/bin/${p.meta.mainProgram or p.pname or p.name}";
    unique = b.foldl' (acc: x: if b.elem x acc then acc else acc ++ [ x ]) [ ];
    cleanSource = src: src;
    cleanSourceWith =
      {
        src,
        filter ? (_: _: true),
        name ? "source",
      }:
      {
        inherit name;
        outPath = "/nix/store/00000000000000000000000000000000-${name}";
      };
    fileset = {
      unions = l: l;
      toSource =
        { root, fileset }:
        {
          name = "source";
          outPath = "/nix/store/00000000000000000000000000000000-source";
          files = map toString fileset;
        };
    };
    licenses = {
      asl20 = "asl20";
      gpl2Plus = "gpl2Plus";
      gpl3Only = "gpl3Only";
    };
    sourceTypes.binaryNativeCode = "binaryNativeCode";
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };

  # A fake derivation: `args` keeps what the builder got; dependencies are forced so that
  # a missing package fails here.
  drv =
    kind: name: args:
    let
      deps = b.concatLists (
        map (k: args.${k} or [ ]) [
          "dependencies"
          "propagatedBuildInputs"
          "nativeBuildInputs"
          "buildInputs"
          "build-system"
          "packages"
          "contents"
          "runtimeInputs"
        ]
      );
    in
    (args.passthru or { })
    // {
      type = "derivation";
      inherit kind name args;
      pname = args.pname or name;
      meta = args.meta or { };
      depNames = map (d: d.name) deps;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
    };

  named = args: args.name or "${args.pname}-${args.version}";

  callPackageWith =
    scope: f: overrides:
    let
      fn = if b.isFunction f then f else import f;
    in
    fn (b.intersectAttrs (b.functionArgs fn) scope // overrides);

  tool = name: drv "tool" name { meta.mainProgram = name; };

  stdenv = {
    hostPlatform = { inherit system; };
    cc.cc.lib = tool "gcc-lib";
    mkDerivation = args: drv "mkDerivation" (named args) args;
  };

  # Python: the attributes of python3Packages that nix/ uses.
  pythonPackageNames = [
    "aiohttp"
    "accelerate"
    "cachetools"
    "cffi"
    "colorlog"
    "faster-whisper"
    "gguf"
    "grpcio"
    "grpcio-health-checking"
    "grpcio-tools"
    "jsonschema"
    "numpy"
    "onnxruntime"
    "pathvalidate"
    "pocketsphinx"
    "prometheus-client"
    "protobuf"
    "pydantic"
    "pydantic-settings"
    "pytest"
    "pytest-asyncio"
    "pytest-timeout"
    "pytest-xdist"
    "python-json-logger"
    "pyyaml"
    "requests"
    "safetensors"
    "setuptools"
    "soxr"
    "srt"
    "tenacity"
    "tokenizers"
    "torch"
    "tqdm"
    "transformers"
    "watchfiles"
    "websockets"
    # nixpkgs' own piper-tts (the old python_run package): nix/ replaces it.
    "piper-tts"
  ];

  mkPython =
    {
      self ? null,
      packageOverrides ? (_: _: { }),
    }:
    let
      base =
        final:
        lib.genAttrs pythonPackageNames (n: drv "python-package" n { })
        // {
          buildPythonPackage =
            args:
            assert args ? pname && args ? version && args ? src;
            assert (args.format or null) == "wheel" || args.pyproject or false;
            drv "buildPythonPackage" (named args) args;
          callPackage = callPackageWith (pkgs // final);
        };
      ps = lib.fix (lib.extends packageOverrides base);
      interpreter = {
        pkgs = ps;
        sitePackages = "lib/python3.13/site-packages";
        interpreter = "/nix/store/00000000000000000000000000000000-python3/bin/python3";
        withPackages = f: drv "python-env" "python3-env" { packages = f ps; };
        override = mkPython;
      };
    in
    interpreter;

  pkgs = {
    inherit lib stdenv system;
    stdenvNoCC = stdenv;
    config = config;
    overlays = overlays;
    callPackage = callPackageWith pkgs;
    python3 = mkPython { };
    python3Minimal = tool "python3";
    fetchurl =
      args:
      assert args ? url && args ? hash;
      drv "fetchurl" (b.baseNameOf args.url) args;
    fetchFromGitHub =
      args:
      assert args ? owner && args ? repo && args ? rev && args ? hash;
      drv "fetchFromGitHub" "source" args;
    runCommand =
      name: env: script:
      drv "runCommand" name (env // { inherit script; });
    writeText = name: text: drv "writeText" name { inherit text; };
    writeScriptBin = name: text: drv "writeScriptBin" name { inherit text; };
    writeShellApplication = args: drv "writeShellApplication" args.name args;
    mkShell = args: drv "mkShell" (args.name or "shell") args;
    linkFarm =
      name: entries:
      drv "linkFarm" name {
        inherit entries;
        contents = map (e: e.path) entries;
      };
    dockerTools.buildLayeredImage = args: drv "image" "${args.name}.tar.gz" args;
  }
  // lib.genAttrs [
    "autoPatchelfHook"
    "bison"
    "espeak-ng"
    "flex"
    "git"
    "grpc-health-probe"
    "process-compose"
    "ruff"
    "sipp"
    "sox"
    "unzip"
    "which"
  ] tool;
in
pkgs
