# The `vosk` Python package (nixpkgs has none): the PyPI manylinux wheel, whose
# libvosk.so is patched to find libstdc++ in the store.
# Hashes: sha256 of the wheels that `pip download --no-deps vosk==0.3.45` fetched,
# equal to the digests PyPI's index lists for them (see docs/nix.md).
{
  lib,
  stdenv,
  buildPythonPackage,
  fetchurl,
  autoPatchelfHook,
  cffi,
  requests,
  tqdm,
  srt,
  websockets,
}:
let
  wheels = {
    x86_64-linux = {
      url = "https://files.pythonhosted.org/packages/fc/ca/83398cfcd557360a3d7b2d732aee1c5f6999f68618d1645f38d53e14c9ff/vosk-0.3.45-py3-none-manylinux_2_12_x86_64.manylinux2010_x86_64.whl";
      hash = "sha256-JeAlCTxDmdcnj1Q1aO2MxUYKw6S/SMI2c6zh4l0mYZ8=";
    };
    aarch64-linux = {
      url = "https://files.pythonhosted.org/packages/a4/23/3130a69fa0bf4f5566a52e415c18cd854bf561547bb6505666a6eb1bb625/vosk-0.3.45-py3-none-manylinux2014_aarch64.whl";
      hash = "sha256-VO+0fdiQ5UTp4g8DFkE6zsf4aA0E7AlcYUCrTnAmJwQ=";
    };
  };
  system = stdenv.hostPlatform.system;
  wheel = wheels.${system} or (throw "vosk: no wheel for ${system}");
in
buildPythonPackage {
  pname = "vosk";
  version = "0.3.45";
  format = "wheel";

  src = fetchurl { inherit (wheel) url hash; };

  nativeBuildInputs = [ autoPatchelfHook ];
  # libvosk.so needs libstdc++, libgcc_s, libm and libc, nothing else.
  buildInputs = [ stdenv.cc.cc.lib ];

  dependencies = [
    cffi
    requests
    tqdm
    srt
    websockets
  ];

  pythonImportsCheck = [ "vosk" ];

  meta = {
    description = "Offline speech recognition (Kaldi based), Python bindings with libvosk";
    homepage = "https://alphacephei.com/vosk/";
    license = lib.licenses.asl20;
    platforms = builtins.attrNames wheels;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
  };
}
