"""Writes a fixture the way tests/common/array_fixture.hpp reads it: tests/fixtures/<stem>.json
(the generator's metadata plus an index "arrays": {name: {"offset": bytes, "shape": [...],
"dtype": ...}}) beside <stem>.bin (the little-endian raw arrays), each written to a temporary file
renamed over the old one; and reads one back. Shared by tests/make_reference.py,
tests/make_sdpa_fixture.py and benchmarks/pytorch/attention_sdpa.py."""
import json
import os

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def write_array_fixture(stem, arrays, meta):
    """arrays: {name: array, or (dtype name, array) where the name is not numpy's (bfloat16 as
    uint16 bits)}, in file order; meta: the JSON object, to which "arrays" is added last.
    Returns the size of <stem>.bin in bytes."""
    index, blob, offset = {}, [], 0
    for name, entry in arrays.items():
        dtype, arr = entry if isinstance(entry, tuple) else (str(entry.dtype), entry)
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        index[name] = {"offset": offset, "shape": list(arr.shape), "dtype": dtype}
        blob.append(data)
        offset += len(data)
    meta = dict(meta, arrays=index)
    os.makedirs(FIXTURES, exist_ok=True)
    for fname, payload, mode in ((stem + ".bin", b"".join(blob), "wb"),
                                 (stem + ".json", json.dumps(meta, indent=1), "w")):
        path = os.path.join(FIXTURES, fname)
        with open(path + ".tmp", mode) as f:
            f.write(payload)
        os.replace(path + ".tmp", path)
    return offset


def read_array_fixture(json_path):
    """The fixture at json_path (and the .bin beside it): (meta, {name: array}), bfloat16 arrays
    widened to float32 (exact)."""
    with open(json_path) as f:
        meta = json.load(f)
    blob = np.fromfile(os.path.splitext(json_path)[0] + ".bin", dtype=np.uint8)
    arrays = {}
    for name, e in meta["arrays"].items():
        count = int(np.prod(e["shape"]))
        if e["dtype"] == "bfloat16":  # 16 bits each: the top half of a float32
            bits = blob[e["offset"]:e["offset"] + 2 * count].view("<u2").astype(np.uint32) << 16
            arrays[name] = bits.view(np.float32).reshape(e["shape"])
        else:
            dtype = np.dtype(e["dtype"]).newbyteorder("<")
            arrays[name] = blob[e["offset"]:e["offset"] + dtype.itemsize * count].view(dtype).reshape(e["shape"])
    return meta, arrays
