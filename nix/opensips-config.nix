# The project's OpenSIPS script (core/opensips/opensips.cfg) in the store, for the dev
# shell (as written: everything on 127.0.0.1) and for the image (SIP sockets on every
# address, since the container's port is published). Any `mpath` is pointed at the
# package's modules, and the build fails when the script loads a module that
# nix/opensips.nix does not build.
{
  pkgs,
  opensips,
  root,
}:
let
  inherit (pkgs) lib;
  cfgFile = root + "/core/opensips/opensips.cfg";
  allowed = lib.concatStringsSep " " (opensips.modules ++ opensips.builtinModules);

  mkConfig =
    { name, production }:
    if !builtins.pathExists cfgFile then
      throw "core/opensips/opensips.cfg is missing from the checkout"
    else
      pkgs.runCommand name { } ''
        mkdir -p $out/etc/opensips
        cfg=$out/etc/opensips/opensips.cfg
        cp ${cfgFile} $cfg
        chmod u+w $cfg
        sed -i -E 's|^([[:space:]]*mpath[[:space:]]*=).*$|\1"${opensips}/${opensips.modulesDir}/"|' $cfg
        ${lib.optionalString production ''
          # Reachable from outside the container; MI and events stay on 127.0.0.1,
          # which the core shares with OpenSIPS (docker/compose.yaml: network_mode).
          sed -i -E '/^[[:space:]]*(socket|listen)[[:space:]]*=/ s/127\.0\.0\.1/0.0.0.0/g' $cfg
        ''}
        loaded=$(grep -oE '^[[:space:]]*loadmodule[[:space:]]+"[^"]+"' $cfg \
          | sed -E 's/.*"([^"]*\/)?([^"/]+)\.so"/\2/')
        test -n "$loaded" || { echo "opensips.cfg loads no module"; exit 1; }
        for m in $loaded; do
          case " ${allowed} " in
            *" $m "*) ;;
            *) echo "opensips.cfg loads $m.so, which nix/opensips.nix does not build"; exit 1 ;;
          esac
        done
      '';
in
{
  # False while the checkout has no cfg: the dev shell then leaves OPENSIPS_CFG unset.
  available = builtins.pathExists cfgFile;
  development = mkConfig {
    name = "opensips-ai-cfg";
    production = false;
  };
  production = mkConfig {
    name = "opensips-ai-cfg-production";
    production = true;
  };
}
