"""The VAD endpointer's decisions on scripted frames ("S" speech, "." silence, 30 ms each)."""

from __future__ import annotations

from asr_service.engines.endpointing import Edge, EndpointConfig, VadEndpointer

CONFIG = EndpointConfig(frame_s=0.03, start_s=0.12, start_ratio=0.6, preroll_s=0.1,
                        pause_s=0.2, end_s=0.5, end_ratio=0.9)


def run(frames: str, config: EndpointConfig = CONFIG) -> tuple[VadEndpointer, list[tuple[int, Edge]],
                                                               list[bytes]]:
    endpointer = VadEndpointer(lambda frame: frame == b"S", config)
    edges: list[tuple[int, Edge]] = []
    decoded: list[bytes] = []
    for index, char in enumerate(frames):
        step = endpointer.process(char.encode())
        edges.extend((index, edge) for edge in step.edges)
        decoded.extend(step.decode)
    return endpointer, edges, decoded


def test_start_pause_end_in_order_with_the_right_delays() -> None:
    frames = "." * 10 + "S" * 20 + "." * 30
    endpointer, edges, decoded = run(frames)
    assert [edge for _, edge in edges] == [Edge.START, Edge.PAUSE, Edge.END]
    (start_at, _), (pause_at, _), (end_at, _) = edges
    # 3 of the 4 newest frames are speech at the 3rd speech frame (index 12).
    assert start_at == 12
    # Pause after 7 silent frames (0.21 s >= 0.2 s); the end when 90% of the last 17
    # frames (0.5 s) are silent: the 16th silent frame.
    assert pause_at == 30 + 6
    assert end_at == 30 + 15
    assert abs(endpointer.speech_start_s - 0.27) < 1e-9  # the start window's first frame
    assert abs(endpointer.speech_end_s - 0.9) < 1e-9  # the last speech frame's end
    # The decoder got the pre-roll (4 frames: the start window) and every frame after it.
    assert decoded[0] == b"." and decoded.count(b"S") == 20
    assert len(decoded) == 4 + (end_at - start_at)


def test_speech_resuming_after_a_pause_keeps_one_utterance() -> None:
    frames = "S" * 20 + "." * 10 + "S" * 10 + "." * 30
    _, edges, _ = run(frames)
    assert [edge for _, edge in edges] == [Edge.START, Edge.PAUSE, Edge.PAUSE, Edge.END]


def test_a_click_does_not_start_and_a_click_does_not_hold_the_end_open() -> None:
    _, edges, _ = run("." * 10 + "S" + "." * 10)
    assert edges == []
    frames = "S" * 20 + "." * 8 + "S" + "." * 30
    _, edges, _ = run(frames)
    assert [edge for _, edge in edges][-1] is Edge.END
    assert [edge for _, edge in edges].count(Edge.END) == 1


def test_flush_ends_an_utterance_in_progress_only() -> None:
    endpointer, edges, _ = run("S" * 20)
    assert [edge for _, edge in edges] == [Edge.START]
    assert endpointer.flush().edges == [Edge.END]
    assert endpointer.flush().edges == []
