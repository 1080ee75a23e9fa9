"""The listening sockets `serve` binds: connections accepted on them get TCP_NODELAY (asyncio sets
it only when the socket's proto says TCP; without it each HTTP response written in two parts
waited for the client's delayed ACK, about 40 ms on loopback)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from radservice.serve import ListenError, bind_tcp

pytestmark = pytest.mark.integration


def test_accepted_connections_have_tcp_nodelay() -> None:
    async def main() -> list[int]:
        sock = bind_tcp("127.0.0.1", 0, what="test listener")
        seen: list[int] = []
        done = asyncio.Event()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            done.set()

        server = await asyncio.start_server(accepted, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await asyncio.wait_for(done.wait(), 5)
        writer.close()
        server.close()
        await server.wait_closed()
        return seen

    assert asyncio.run(main()) == [1]


def test_a_port_in_use_is_a_listen_error() -> None:
    taken = bind_tcp("127.0.0.1", 0, what="first")
    try:
        with pytest.raises(ListenError, match="address already in use"):
            bind_tcp("127.0.0.1", taken.getsockname()[1], what="second")
    finally:
        taken.close()
