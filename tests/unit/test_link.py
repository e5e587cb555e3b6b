"""PeerLink over a socketpair: direct and batched sends keep frame order."""
from __future__ import annotations

import trio

from replicator.link import PeerLink
from replicator.protocol import Msg


def test_direct_and_batched_frames_arrive_in_order_and_report_sent():
    async def main() -> None:
        a, b = trio.socket.socketpair()
        sender, receiver = PeerLink(a), PeerLink(b)
        got: list[tuple[int, bytes]] = []
        sent = [trio.Event() for _ in range(40)]

        async def receive() -> None:
            async for frame in receiver.frames():
                if frame is None:
                    if len(got) == len(sent):
                        return
                    continue
                got.append((frame.body["seq"], bytes(frame.data)))

        async with trio.open_nursery() as n:
            n.start_soon(sender.sender)
            n.start_soon(receive)
            for i, ev in enumerate(sent):
                # alternate: a batched frame must not overtake a direct one or vice versa
                sender.send(Msg.DATA, {"seq": i}, bytes([i]) * 4096, ev, batch=i % 3 != 0)
            for ev in sent:
                await ev.wait()
            with trio.fail_after(5):
                while len(got) < len(sent):
                    await trio.sleep(0.01)
            n.cancel_scope.cancel()
        sender.close()
        receiver.close()
        assert got == [(i, bytes([i]) * 4096) for i in range(len(sent))]
    trio.run(main)
