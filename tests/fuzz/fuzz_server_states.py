"""Fuzz target: ``ParameterServer.set_states`` on arbitrary bytes must either load or raise
``ValueError``, leave the server exactly as it was when it raises, and leave a working server when it
loads; it must never crash, hang, execute code or raise anything else.

Seeds are valid archives of servers in every mode (mutations explore the zip / npy / JSON manifest
parsers and the server's own checks). Run: ``python tests/fuzz/fuzz_server_states.py -max_total_time=30``.
"""

from __future__ import annotations

import io
import json
import os
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    import fusedopt
    from fusedopt.distributed import ParameterServer

RAN = {"code": False}
SHAPES = [(3,), (2, 2)]


class Payload:
    def __reduce__(self):  # would run only if something unpickled it
        return (RAN.__setitem__, ("code", True))


def _server(mode: int) -> ParameterServer:
    params = [np.zeros(s, np.float32) for s in SHAPES]
    if mode == 0:
        return ParameterServer(params, fusedopt.SGD(momentum=0.9), 2)
    if mode == 1:
        return ParameterServer(params, fusedopt.SGD(), 2, synchronous=True)
    if mode == 2:
        return ParameterServer(params, fusedopt.DCASGD(momentum=0.9, adaptive=True), 2)
    return ParameterServer(params, fusedopt.DCASGD(), 2, backups="previous")


def _seed(mode: int) -> bytes:
    server = _server(mode)
    server.pull(0)
    server.pull(1)
    server.push(1, [np.ones(s, np.float32) for s in SHAPES], seq=3)
    return server.get_states()


SEEDS = [_seed(m) for m in range(4)]


def _mutate_manifest(blob: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    """The archive with one value of its JSON manifest replaced by a fuzzed JSON value."""
    with np.load(io.BytesIO(blob)) as z:
        arrays = {k: z[k] for k in z.files}
    text = arrays.pop("manifest").tobytes().decode()
    pos = fdp.ConsumeIntInRange(0, len(text))
    text = text[:pos] + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16)) + text[pos:]
    out = io.BytesIO()
    np.savez(out, manifest=np.frombuffer(text.encode(), np.uint8), **arrays)
    return out.getvalue()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    what = fdp.ConsumeIntInRange(0, 3)
    mode = fdp.ConsumeIntInRange(0, 3)
    if what == 0:
        blob = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif what == 1:  # flip bytes of a valid archive
        blob = bytearray(SEEDS[mode])
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            blob[fdp.ConsumeIntInRange(0, len(blob) - 1)] = fdp.ConsumeIntInRange(0, 255)
        blob = bytes(blob)
    elif what == 2:
        blob = _mutate_manifest(SEEDS[mode], fdp)
    else:  # pickle bytes must never be loaded
        import pickle

        blob = pickle.dumps({0: Payload()})
    server = _server(mode)
    before = server.get_states()
    try:
        server.set_states(blob)
    except ValueError:
        assert server.get_states() == before, "a refused set_states changed the server"
        return
    finally:
        assert not RAN["code"], "a pickled payload was executed"
    server.pull(0)  # a loaded server works
    try:
        server.push(0, [np.ones(s, np.float32) for s in SHAPES])
    except ValueError as exc:  # only a loaded synchronous round may refuse (worker 0 pushed)
        assert "already pushed" in str(exc), exc
    json.dumps(server.stats())


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    atheris.Fuzz()
