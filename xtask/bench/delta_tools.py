"""Patch sizes of the tools people use today, for BENCHMARKS.md ("Delta updates").

Usage: delta_tools.py WORKDIR PAIRS.json
PAIRS.json: [{"base", "target", "base_elf", "target_elf", "base_address", "target_address"}].
Prints one JSON object per pair with the bytes of each tool's patch: bsdiff4, detools (lzma),
detools (heatshrink, its embedded compression), detools (lzma) with its arm-cortex-m4 data
format fed the two ELFs; and under "ops", twinbank's op stream of the pair compressed by
heatshrink (the C reference, heatshrink2; heatshrink-lib on crates.io is a port of the same
format) at several window/lookahead sizes, deflate and lzma. Run by `cargo xtask delta-bench` with the virtualenv it creates under
target/ (pip install detools bsdiff4).
"""

import json
import os
import subprocess
import sys

import bsdiff4
import heatshrink2
import lzma
import zlib


def detools(workdir, pair, compression, elf=False):
    out = os.path.join(workdir, "detools.patch")
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "detools"),
        "create_patch",
        "--compression",
        compression,
    ]
    if elf:
        # Addresses in the image = file offset + bank address: detools wants minus that.
        cmd += [
            "--data-format",
            "arm-cortex-m4",
            "--from-elf-file",
            pair["base_elf"],
            "--to-elf-file",
            pair["target_elf"],
            "--from-elf-offset=%d" % -pair["base_address"],
            "--to-elf-offset=%d" % -pair["target_address"],
        ]
    cmd += [pair["base"], pair["target"], out]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return os.path.getsize(out)


def compressed(path):
    if not path:
        return {}
    with open(path, "rb") as f:
        ops = f.read()
    sizes = {
        "hs_%d_%d" % (w, l): len(heatshrink2.compress(ops, window_sz2=w, lookahead_sz2=l))
        for (w, l) in [(8, 4), (10, 4), (11, 4), (12, 4), (12, 5)]
    }
    sizes["deflate"] = len(zlib.compress(ops, 9))
    sizes["lzma"] = len(lzma.compress(ops, preset=9 | lzma.PRESET_EXTREME))
    return sizes


def main():
    workdir = sys.argv[1]
    with open(sys.argv[2]) as f:
        pairs = json.load(f)
    for pair in pairs:
        with open(pair["base"], "rb") as f:
            old = f.read()
        with open(pair["target"], "rb") as f:
            new = f.read()
        print(
            json.dumps(
                {
                    "base": pair["base"],
                    "target": pair["target"],
                    "bsdiff4": len(bsdiff4.diff(old, new)),
                    "detools_lzma": detools(workdir, pair, "lzma"),
                    "detools_heatshrink": detools(workdir, pair, "heatshrink"),
                    "detools_lzma_cm4": detools(workdir, pair, "lzma", elf=True),
                    "ops": compressed(pair.get("ops")),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
