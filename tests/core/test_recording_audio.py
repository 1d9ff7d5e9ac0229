"""Where the recorder puts each frame (recording/audio.py): by its RTP timestamp, on the
call's timeline, whatever the arrival jitter; silences keep their length."""

from __future__ import annotations

import io
import wave

import numpy as np

from opensips_ai_core.recording.audio import CallRecorder, place, wav_bytes

FRAME = 160


def frame(value: int) -> np.ndarray:
    return np.full(FRAME, value, np.int16)


def test_jitter_moves_nothing_and_a_silence_keeps_its_length() -> None:
    t0 = 100.0
    # 20 ms frames whose arrival jitters by up to 15 ms, then 1.5 s of silence
    # suppression (no packets, the timestamps go on), then two more frames.
    frames = [(t0 + 0.5 + 0.02 * n + (0.015 if n % 2 else 0.0), 1000 + FRAME * n, 7, frame(n))
              for n in range(5)]
    frames += [(t0 + 2.1 + 0.02 * n, 1000 + FRAME * (80 + n), 7, frame(80 + n))
               for n in range(2)]
    positions = [pos for pos, _ in place(frames, t0)]
    assert positions == [4000 + FRAME * n for n in range(5)] + [4000 + FRAME * 80,
                                                               4000 + FRAME * 81]


def test_a_new_ssrc_or_a_stray_timestamp_is_anchored_on_its_arrival() -> None:
    t0 = 0.0
    frames = [(1.0, 50, 1, frame(1)), (1.02, 50 + FRAME, 1, frame(2)),
              (2.0, 999_999, 2, frame(3)),           # a new stream (re-INVITE)
              (2.02, 999_999 + FRAME, 2, frame(4)),
              (3.5, 999_999 + FRAME * 2, 2, frame(5)),  # 1.5 s behind its arrival
              ]
    assert [pos for pos, _ in place(frames, t0)] == [8000, 8000 + FRAME, 16000,
                                                      16000 + FRAME, 28000]


def test_timestamps_wrap_around() -> None:
    frames = [(0.0, 0xFFFFFFFF - 79, 3, frame(1)), (0.02, 80, 3, frame(2))]
    assert [pos for pos, _ in place(frames, 0.0)] == [0, FRAME]


def test_the_recording_is_a_stereo_wav_with_the_caller_left_and_the_bot_right() -> None:
    recorder = CallRecorder(t0=0.0, max_s=10.0)
    recorder.caller.frames.append((0.1, 0, 1, frame(5)))
    recorder.bot.frames.append((0.2, 0, 2, frame(-9)))
    recorder.ended = 0.5
    stereo = recorder.render()
    assert stereo.shape == (4000, 2)
    assert (stereo[800:960, 0] == 5).all() and not stereo[800:960, 1].any()
    assert (stereo[1600:1760, 1] == -9).all() and not stereo[1600:1760, 0].any()
    assert stereo[:800].sum() == 0 and stereo[1760:].sum() == 0  # the silences are kept
    with wave.open(io.BytesIO(wav_bytes(stereo))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        assert wav.getnframes() == 4000


def test_a_recording_is_bounded() -> None:
    recorder = CallRecorder(t0=0.0, max_s=0.05)  # 400 samples: two frames and a half
    for n in range(4):
        recorder.on_caller_frame(FRAME * n, 1, frame(n + 1))
    assert recorder.caller.samples == 2 * FRAME and recorder.caller.dropped == 2 * FRAME
