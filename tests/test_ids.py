"""Hot-path identifiers: valid version-4 UUIDs, unique, and different in a forked child."""

from __future__ import annotations

import os
import uuid

from polymodal.domain import ids


def test_uuid4_is_a_valid_random_uuid_and_ids_do_not_repeat() -> None:
    drawn = [ids.uuid4() for _ in range(20_000)]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in drawn)
    assert len(set(drawn)) == len(drawn)
    hexes = {ids.hex_id() for _ in range(20_000)}
    assert len(hexes) == 20_000 and all(len(h) == 32 for h in hexes)


def test_a_forked_child_draws_different_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, ids.hex_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != ids.hex_id()
