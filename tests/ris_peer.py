"""The RIS in the tests: python-hl7's asyncio MLLP server (an implementation independent of ours)
in a thread, parsing every ORU it receives and answering AA, AE (with an ERR segment), AR, or
nothing at all, as the test tells it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import hl7
from hl7.mllp import start_hl7_server


def _text(value: object) -> str:
    # python-hl7's extract_field unescapes, turning \.br\ into CR (which cannot occur in a field
    # otherwise: it ends segments); a report's line breaks are LF.
    return str(value).replace("\r", "\n")


@dataclass
class Received:
    message: hl7.Message
    raw: str
    connection: int
    #: time.perf_counter() once the ACK was written (None while unanswered)
    acked_at: float | None = None

    def field(self, segment: str, n: int, component: int = 1, subcomponent: int = 1) -> str:
        """One unescaped value of the first segment named ``segment``."""
        seg = self.message.segment(segment)
        return _text(seg.extract_field(field_num=n, component_num=component, subcomponent_num=subcomponent))

    def obx(self) -> list[hl7.Segment]:
        return list(self.message.segments("OBX"))

    def obx_value(self, seg: hl7.Segment, n: int, component: int = 1) -> str:
        return _text(seg.extract_field(field_num=n, component_num=component))

    def sections(self) -> dict[str, str]:
        """OBX-3.1 (the LOINC code) -> OBX-5 text of every FT OBX."""
        return {self.obx_value(s, 3): self.obx_value(s, 5) for s in self.obx() if str(s[2]) == "FT"}


@dataclass
class RisPeer:
    """Listens on ``port`` once started; ``answer`` is AA, AE, AR or "silent"; ``delay`` (if
    given) says how many seconds to wait before each ACK."""

    port: int
    answer: str = "AA"
    delay: Callable[[], float] | None = None
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.AbstractServer | None = None
    _writers: set[hl7.mllp.HL7StreamWriter] = field(default_factory=set)

    def start(self) -> RisPeer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                start_hl7_server(self._client, "127.0.0.1", self.port, encoding="utf-8"))
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="ris-peer", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the RIS peer did not start"
        return self

    def stop(self) -> None:
        """Close the listener and every connection (as a RIS going down does)."""
        if self._loop is None or self._thread is None:
            return
        loop = self._loop

        async def shut() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> RisPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _client(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        self._writers.add(writer)
        try:
            while not reader.at_eof():
                try:
                    message = await reader.readmessage()
                except asyncio.IncompleteReadError:
                    break
                received = Received(message, str(message), connection)
                self.received.append(received)
                if self.answer == "silent":
                    continue
                if self.delay is not None:
                    await asyncio.sleep(self.delay())
                writer.writemessage(self._ack(message))
                await writer.drain()
                received.acked_at = time.perf_counter()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _ack(self, message: hl7.Message) -> hl7.Message:
        control_id = str(message.segment("MSH")[10])
        stamp = time.strftime("%Y%m%d%H%M%S")
        text = f"MSH|^~\\&|RIS|HOSPITAL|RADSERVICE|RADIOLOGY|{stamp}||ACK^R01^ACK|ACK{control_id}|P|2.5.1\r"
        if self.answer == "AA":
            text += f"MSA|AA|{control_id}\r"
        else:
            text += (f"MSA|{self.answer}|{control_id}\r"
                     "ERR||OBR^1^3|204^Unknown key identifier^HL70357|E||||Order not found in RIS\r")
        return hl7.parse(text)

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the RIS received {len(self.received)} message(s), not {count}")
            time.sleep(0.02)
        return self.received
