# Production OCI images, one per service, built with dockerTools.buildLayeredImage:
# each holds only its service's closure (its own Python environment, model, binary),
# the code copied in (the project's packages are built into the store, nothing is
# mounted), a non-root user, the production environment (no hot reload, INFO logs),
# an entrypoint and the production health check (the same as docker/compose.yaml's).
# `all` gathers the tarballs in one derivation so that `nix build .#images` works.
{
  pkgs,
  python,
  models,
  opensips,
  opensipsConfig,
}:
let
  inherit (pkgs) lib;
  tag = python.version;
  uid = "10001";

  # /etc/passwd and /etc/group for the unprivileged user, and a /tmp (compose mounts a
  # tmpfs there; the read-only root filesystem needs a writable place for caches).
  userFiles = pkgs.runCommand "opensips-ai-user" { } ''
    mkdir -p $out/etc
    echo "voice:x:${uid}:${uid}:opensips-ai:/tmp:/sbin/nologin" > $out/etc/passwd
    echo "voice:x:${uid}:" > $out/etc/group
  '';

  seconds = s: s * 1000000000; # the image config counts durations in nanoseconds
  # The production health check: 30 s interval, 10 s timeout, 3 retries, 40 s start.
  healthcheck = test: {
    Test = [ "CMD" ] ++ test;
    Interval = seconds 30;
    Timeout = seconds 10;
    Retries = 3;
    StartPeriod = seconds 40;
  };

  productionEnv = {
    DEVELOPMENT_MODE = "0";
    LOG_LEVEL = "INFO";
    PYTHONUNBUFFERED = "1";
    PYTHONDONTWRITEBYTECODE = "1";
    HOME = "/tmp";
    VOICE_CACHE_DIR = "/tmp/opensips-ai";
    TRANSFORMERS_OFFLINE = "1";
    HF_HUB_OFFLINE = "1";
  };
  envList = attrs: lib.mapAttrsToList (k: v: "${k}=${v}") attrs;

  mkImage =
    {
      name,
      contents,
      entrypoint,
      env,
      ports,
      health,
    }:
    pkgs.dockerTools.buildLayeredImage {
      name = "opensips-ai-${name}";
      inherit tag;
      contents = contents ++ [ userFiles ];
      extraCommands = ''
        mkdir -p tmp
        chmod 1777 tmp
      '';
      # Store paths named only here (the models in Env, the cfg in Entrypoint) still go
      # into the image: streamLayeredImage takes the config (baseJson) as a closure root.
      config = {
        User = "${uid}:${uid}";
        WorkingDir = "/tmp";
        Entrypoint = entrypoint;
        Env = envList (productionEnv // env // { PATH = "/bin"; });
        ExposedPorts = lib.genAttrs ports (_: { });
        Healthcheck = healthcheck health;
        Labels = {
          "org.opencontainers.image.title" = "opensips-ai-${name}";
          "org.opencontainers.image.version" = tag;
        };
      };
    };

  grpcHealth = port: [
    "python"
    "-m"
    "voice_common.healthcheck"
    "127.0.0.1:${toString port}"
  ];

  pythonService =
    {
      name,
      module,
      prefix,
      port,
      env ? { },
      extraContents ? [ ],
    }:
    let
      pyEnv = python.envs.${name};
    in
    mkImage {
      inherit name;
      contents = [ pyEnv ] ++ extraContents;
      entrypoint = [
        "${pyEnv}/bin/python"
        "-m"
        module
      ];
      env = {
        "${prefix}_HOST" = "0.0.0.0";
        "${prefix}_PORT" = toString port;
        "${prefix}_HOT_RELOAD" = "0";
        "${prefix}_LOG_LEVEL" = "INFO";
      }
      // env;
      ports = [ "${toString port}/tcp" ];
      health = grpcHealth port;
    };

  # OpenSIPS has no health command of its own: ask its MI (mi_datagram, JSON-RPC over
  # UDP) for `uptime` and require an answer. python3Minimal keeps the image small.
  opensipsHealth = pkgs.writeScriptBin "opensips-health" ''
    #!${pkgs.python3Minimal}/bin/python3
    import json, socket, sys
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(json.dumps({"jsonrpc": "2.0", "method": "uptime", "id": 1}).encode(),
                 ("127.0.0.1", port))
        reply = json.loads(s.recv(65535))
    sys.exit(0 if "result" in reply else 1)
  '';

  coreBotConfig = ../core/bot.toml;

  images = {
    asr = pythonService {
      name = "asr";
      module = "asr_service";
      prefix = "ASR";
      port = 50051;
      env.VOSK_MODEL_PATH = models.paths.voskSmallEnUs;
    };
    llm = pythonService {
      name = "llm";
      module = "llm_service";
      prefix = "LLM";
      port = 50052;
      env.TORCH_FORCE_CPU = "1";
    };
    tts = pythonService {
      name = "tts";
      module = "tts_service";
      prefix = "TTS";
      port = 50053;
      env.TTS_VOICE = models.paths.piperVoiceJoe;
      # The service's fallback engine (TTS_ENGINE=espeak-ng) runs the espeak-ng binary.
      extraContents = [ pkgs.espeak-ng ];
    };
    core = mkImage {
      name = "core";
      contents = [ python.envs.core ];
      entrypoint = [
        "${python.envs.core}/bin/python"
        "-m"
        "opensips_ai_core"
      ];
      env = {
        CORE_SIP_HOST = "0.0.0.0";
        CORE_HTTP_HOST = "0.0.0.0";
        CORE_HOT_RELOAD = "0";
        CORE_LOG_LEVEL = "INFO";
      }
      // lib.optionalAttrs (builtins.pathExists coreBotConfig) {
        # The bot's persona file, copied into the store (the default path points into
        # the checkout, which an image does not have).
        CORE_BOT_CONFIG = "${coreBotConfig}";
      };
      ports = [
        "5080/udp"
        "8088/tcp"
        "50060/udp"
      ];
      health = [
        "python"
        "-c"
        "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8088/health', timeout=8).status == 200 else 1)"
      ];
    };
    opensips = mkImage {
      name = "opensips";
      contents = [
        opensips
        opensipsHealth
      ];
      entrypoint = [
        (lib.getExe opensips)
        "-F"
        "-f"
        "${opensipsConfig.production}/etc/opensips/opensips.cfg"
      ];
      env = { };
      ports = [
        "5060/udp"
        "5060/tcp"
      ];
      health = [
        "opensips-health"
        "8080"
      ];
    };
  };
in
images
// {
  all = pkgs.linkFarm "opensips-ai-images-${tag}" (
    lib.mapAttrsToList (name: image: {
      name = "opensips-ai-${name}.tar.gz";
      path = image;
    }) images
  );
}
