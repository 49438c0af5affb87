"""Fuzz target: ``Updater.set_states`` on arbitrary bytes must either load or raise ``ValueError``;
it must never crash, hang, execute code or raise anything else.

Seeds are valid archives (so mutations explore the zip / npy / JSON manifest parsers), and a sentinel
checks that no pickled payload ever runs. Run: ``python tests/fuzz/fuzz_state_loader.py -max_total_time=30``.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile

import atheris

with atheris.instrument_imports():
    import numpy as np

    import fusedopt

RAN = {"code": False}


class Payload:
    def __reduce__(self):  # would run only if something unpickled it
        return (RAN.__setitem__, ("code", True))


def _seed_blobs() -> list[bytes]:
    blobs = []
    for opt in (fusedopt.SGD(momentum=0.9, multi_precision=True),
                fusedopt.DCASGD(momentum=0.9, lr_scheduler=fusedopt.lr_scheduler.FactorScheduler(2, 0.5))):
        u = fusedopt.get_updater(opt)
        u([0, 1], [np.ones(3, np.float16), np.ones((2, 2), np.float32)],
          [np.zeros(3, np.float16), np.zeros((2, 2), np.float32)])
        blobs.append(u.get_states(dump_optimizer=True))
        blobs.append(u.get_states())
    return blobs


SEEDS = _seed_blobs()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        blob = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif mode == 1:  # flip bytes of a valid archive
        blob = bytearray(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            if blob:
                blob[fdp.ConsumeIntInRange(0, len(blob) - 1)] = fdp.ConsumeIntInRange(0, 255)
        blob = bytes(blob)
    elif mode == 2:  # a zip whose manifest is fuzzed text
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            manifest = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
            np.save(z.open("manifest.npy", "w"), np.frombuffer(manifest, np.uint8))
            np.save(z.open("a0.npy", "w"), np.zeros(3, np.float32))
        blob = buf.getvalue()
    else:  # pickle bytes must never be loaded
        import pickle

        blob = pickle.dumps({0: Payload()})
    updater = fusedopt.get_updater(fusedopt.SGD(momentum=0.9))
    try:
        updater.set_states(blob)
    except ValueError:
        pass
    assert not RAN["code"], "a pickled payload was executed"
    # A loaded state must still be checked against its weight at the next update.
    if updater.states:
        for index in list(updater.states)[:2]:
            try:
                updater(index, np.ones(3, np.float32), np.ones(3, np.float32))
            except (ValueError, TypeError):
                pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    atheris.Fuzz()
