# piper-tts 1.8.0 from its PyPI wheel. nixpkgs' `python3Packages.piper-tts` is the
# older piper (src/python_run, the 1.2 API) built from the C++ tree; the TTS service
# is written against the 1.x PyPI API (PiperVoice.load, synthesize -> AudioChunk).
# The wheel carries espeak-ng's data and a bridge linked only against libc.
# Hashes: sha256 of the wheels `pip download --no-deps piper-tts==1.8.0` fetched,
# equal to PyPI's listed digests (see docs/nix.md).
{
  lib,
  stdenv,
  buildPythonPackage,
  fetchurl,
  autoPatchelfHook,
  onnxruntime,
  pathvalidate,
}:
let
  wheels = {
    x86_64-linux = {
      url = "https://files.pythonhosted.org/packages/84/81/0112a7d510911f33018dc24023d1655bb772f84a4e95fe7f0180f66bbd17/piper_tts-1.8.0-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.manylinux_2_28_x86_64.whl";
      hash = "sha256-JbTT8x/3DI+nFRkI4AqqVlDL3xa8qPzyEpnzlBuJp9M=";
    };
    aarch64-linux = {
      url = "https://files.pythonhosted.org/packages/5e/90/de832b09736db8c26c9b5dd25cb408ed065b1d9535e05c78947aec056e36/piper_tts-1.8.0-cp39-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.manylinux_2_28_aarch64.whl";
      hash = "sha256-P2DBkX3m2OgDPzlYeK0/iPbf7oiosF+YlxonX3ajhIQ=";
    };
  };
  system = stdenv.hostPlatform.system;
  wheel = wheels.${system} or (throw "piper-tts: no wheel for ${system}");
in
buildPythonPackage {
  pname = "piper-tts";
  version = "1.8.0";
  format = "wheel";

  src = fetchurl { inherit (wheel) url hash; };

  nativeBuildInputs = [ autoPatchelfHook ];

  dependencies = [
    onnxruntime
    pathvalidate
  ];

  pythonImportsCheck = [
    "piper"
    "piper.espeakbridge"
  ];

  meta = {
    description = "Fast local neural text to speech (Piper), Python package";
    homepage = "https://github.com/OHF-Voice/piper1-gpl";
    license = lib.licenses.gpl3Only;
    platforms = builtins.attrNames wheels;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
  };
}
