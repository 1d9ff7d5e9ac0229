# OpenSIPS 3.6.8 from the upstream source (nixpkgs has no OpenSIPS), with only the
# modules the project's core/opensips/opensips.cfg loads: the B2B UA session path
# (see docs/opensips.md). None of them needs an external library.
# The source hash is the unpacked tree's hash as published in the project's issue 6.
{
  lib,
  stdenv,
  fetchFromGitHub,
  bison,
  flex,
  which,
}:
let
  # Keep in step with the loadmodule lines of core/opensips/opensips.cfg; the config
  # derivation (opensips-config.nix) fails the build when the cfg loads anything else.
  modules = [
    "tm"
    "rr"
    "sl"
    "maxfwd"
    "sipmsgops"
    "textops"
    "signaling"
    "cfgutils"
    "dialog"
    "b2b_entities"
    "uac_auth"
    "mi_datagram"
    "event_datagram"
    # The proxy mode (core/opensips/opensips-dispatcher.cfg): calls spread over cores.
    "dispatcher"
    "db_text"
  ];
  # proto_udp and proto_tcp are built into the 3.6 core.
  builtinModules = [
    "proto_udp"
    "proto_tcp"
  ];
  modulePaths = lib.concatMapStringsSep " " (m: "modules/${m}") modules;
in
stdenv.mkDerivation {
  pname = "opensips";
  version = "3.6.8";

  src = fetchFromGitHub {
    owner = "OpenSIPS";
    repo = "opensips";
    rev = "3.6.8";
    hash = "sha256-Texapm4TR4vqmaonqZK55rBZWYygjjml/9aDQZtem/c=";
  };

  nativeBuildInputs = [
    bison
    flex
    which
  ];

  # The template turns compiler optimisation off (-DCC_O0, "for devs"): not for a server.
  postPatch = ''
    sed -i '/-DCC_O0/d' Makefile.conf.template
  '';

  # Modules install under $out/lib*/opensips/modules/. OpenSIPS compiles in no module
  # directory (a bare `loadmodule "tm.so"` goes to dlopen as is), so the cfg needs an
  # mpath: opensips-config.nix writes this package's, and the cfg's -p preprocessor
  # (core/opensips/opensips-cfg-env) derives it from the running binary.
  makeFlags = [ "PREFIX=${placeholder "out"}" ];
  # `modules` holds spaces, which makeFlags would split: the array keeps it one word.
  preConfigure = ''
    makeFlagsArray+=("modules=${modulePaths}")
  '';
  enableParallelBuilding = true;

  # The core binary and the selected modules only (no menuconfig, console or utils,
  # which would need ncurses and database clients).
  buildFlags = [
    "app"
    "modules"
  ];
  installTargets = [ "install-modules" ];
  postInstall = ''
    install -Dm755 opensips $out/bin/opensips
    # make puts modules under lib64 on 64-bit hosts; give them one stable path.
    if [ -d $out/lib64 ] && [ ! -e $out/lib ]; then ln -s lib64 $out/lib; fi
    for m in ${lib.concatStringsSep " " modules}; do
      test -f $out/lib/opensips/modules/$m.so || { echo "module $m.so was not installed"; exit 1; }
    done
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    $out/bin/opensips -V | grep -q '3\.6\.8'
  '';

  passthru = {
    inherit modules builtinModules;
    modulesDir = "lib/opensips/modules";
  };

  meta = {
    description = "OpenSIPS SIP server (B2B UA session and dispatcher modules only)";
    homepage = "https://opensips.org";
    license = lib.licenses.gpl2Plus;
    platforms = lib.platforms.linux;
    mainProgram = "opensips";
  };
}
