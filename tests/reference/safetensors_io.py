"""safetensors_io.py: the safetensors writer the golden scripts share (struct + json, no extra packages).

Same layout as common/safetensors.c writes: 8-byte little-endian header length, JSON header with
"__metadata__" first, padded with spaces to a multiple of 8, then the tensors back to back.
"""
import json
import os
import struct

import torch


def write_safetensors(path, tensors, meta):
    """tensors: list of (name, tensor), stored as F32. Written to a temp file and renamed into place."""
    header = {"__metadata__": meta}
    blobs, pos = [], 0
    for name, t in tensors:
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
