"""What the core keeps of each call once it has ended, without ever holding a call up.

At the end of a call (`call_ended`, from the call manager once its RTP session is
closed) the transcript is remembered in memory for `GET /calls/{id}/transcript` (the
last MAX_RECENT calls, for KEEP_S), and, as the call's bot asks, a background task
writes the stereo WAV (`record_audio`) and the JSON transcript (`save_transcript`)
into CORE_RECORDINGS_DIR in a worker thread, then POSTs the transcript to the
post-call webhook (`post_call_webhook`, else CORE_WEBHOOK_URL) with retries.

A full disk, an unwritable directory or a webhook that is down or slow changes
nothing for any call: each failure is counted (voice_post_call_failures_total{kind})
and logged once, until that kind of output works again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig, CoreSettings
from opensips_ai_core.recording.audio import CallRecorder
from opensips_ai_core.recording.files import file_stem, write_atomic
from opensips_ai_core.recording.webhook import WebhookError, post_json
from opensips_ai_core.tasks import TaskSet
from voice_common import get_development_logger

log = get_development_logger("core.recording")

KEEP_S = 3600.0
MAX_RECENT = 200
# A recording may run this much past the bot's maximum call duration (the goodbye).
RECORDING_SLACK_S = 60.0


class CallArchive:
    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings
        self.directory = settings.recordings_dir
        self._tasks = TaskSet(log, "post-call")
        self._pending: set[asyncio.Task[None]] = set()
        self._recent: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._failing: set[str] = set()
        self._lock = threading.Lock()  # _failing, from the writer threads

    # ---------------------------------------------------------------- during the call
    def recorder(self, bot: BotConfig, t0: float) -> CallRecorder | None:
        """The call's audio recorder, when its bot asks for one."""
        if not bot.record_audio:
            return None
        return CallRecorder(t0, bot.max_call_duration_s + RECORDING_SLACK_S)

    # ---------------------------------------------------------------- at its end
    def call_ended(self, transcript: dict[str, Any], recorder: CallRecorder | None,
                   bot: BotConfig) -> asyncio.Task[None] | None:
        """Remember the transcript; write and deliver what the bot asks, in the
        background (the returned task, None when there is nothing to do)."""
        if recorder is not None:
            recorder.end()
        self._remember(transcript)
        url = bot.post_call_webhook or self.settings.webhook_url
        if recorder is None and not bot.save_transcript and not url:
            return None
        task = self._tasks.spawn(self._keep(transcript, recorder, bot.save_transcript, url),
                                 name=f"post-call:{transcript['call_id']}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _keep(self, transcript: dict[str, Any], recorder: CallRecorder | None,
                    save_transcript: bool, url: str | None) -> None:
        if recorder is not None or save_transcript:
            await asyncio.to_thread(self._write_files, transcript, recorder, save_transcript)
        if url:
            await self._deliver(url, transcript)

    def _write_files(self, transcript: dict[str, Any], recorder: CallRecorder | None,
                     save_transcript: bool) -> None:
        """In a worker thread: the WAV, then the JSON, each on its own."""
        stem = file_stem(transcript["call_id"])
        if recorder is not None:
            path = self.directory / f"{stem}.wav"
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                write_atomic(path, recorder.wav_bytes())
            except OSError as err:
                self._failed("recording", f"cannot write {path}: {err}")
            else:
                self._worked("recording")
                transcript["recording"] = path.name
        if save_transcript:
            path = self.directory / f"{stem}.json"
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                data = json.dumps(transcript, indent=2, ensure_ascii=False).encode()
                write_atomic(path, data + b"\n")
            except OSError as err:
                self._failed("transcript", f"cannot write {path}: {err}")
            else:
                self._worked("transcript")

    async def _deliver(self, url: str, transcript: dict[str, Any]) -> None:
        settings = self.settings
        try:
            attempt = await post_json(url, {"event": "call.ended", **transcript},
                                      attempts=settings.webhook_attempts,
                                      timeout_s=settings.webhook_timeout_s,
                                      backoff_s=settings.webhook_backoff_s)
        except WebhookError as err:
            self._failed("webhook", f"post-call webhook {url} for {transcript['call_id']} "
                         f"failed: {err}")
        else:
            self._worked("webhook")
            log.debug("Post-call webhook delivered %s (attempt %d)", transcript["call_id"],
                      attempt)

    def _failed(self, kind: str, why: str) -> None:
        metrics.POST_CALL_FAILURES.labels(kind).inc()
        with self._lock:
            first = kind not in self._failing
            self._failing.add(kind)
        if first:
            log.warning("%s (calls go on; logged once until it works again, counted in "
                        "voice_post_call_failures_total)", why)

    def _worked(self, kind: str) -> None:
        metrics.POST_CALL_OUTPUTS.labels(kind).inc()
        with self._lock:
            recovered = kind in self._failing
            self._failing.discard(kind)
        if recovered:
            log.info("Post-call %s works again", kind)

    # ---------------------------------------------------------------- reading
    def _remember(self, transcript: dict[str, Any]) -> None:
        now = time.monotonic()
        self._recent[transcript["call_id"]] = (now, transcript)
        self._recent.move_to_end(transcript["call_id"])
        while self._recent and (len(self._recent) > MAX_RECENT
                                or next(iter(self._recent.values()))[0] < now - KEEP_S):
            self._recent.popitem(last=False)

    def transcript(self, call_id: str) -> dict[str, Any] | None:
        """An ended call's transcript, by its id or its SIP Call-ID."""
        kept = self._recent.get(call_id)
        if kept is not None:
            return kept[1]
        for _, transcript in reversed(self._recent.values()):
            if transcript.get("sip_call_id") == call_id:
                return transcript
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def close(self, timeout_s: float) -> None:
        """At exit: give the writes and deliveries under way `timeout_s`, then stop them."""
        pending = {task for task in self._pending if not task.done()}
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout_s)
            if late:
                log.warning("Post-call work of %d call(s) still running at exit: cancelled",
                            len(late))
        await self._tasks.cancel_all()
