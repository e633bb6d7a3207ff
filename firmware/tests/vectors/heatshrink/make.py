"""Writes the reference heatshrink streams for every input here, with the reference C encoder
(PyPI heatshrink2 wraps atomicobject/heatshrink). Run: python3 make.py"""
import glob
import heatshrink2

PAIRS = [(8, 4), (10, 4), (11, 4), (12, 5)]  # firmware's HeatshrinkParams::SUPPORTED

for path in sorted(glob.glob("*.bin")):
    data = open(path, "rb").read()
    for w, l in PAIRS:
        out = heatshrink2.encode(data, window_sz2=w, lookahead_sz2=l)
        name = f"{path[:-4]}.w{w}l{l}.hs"
        open(name, "wb").write(out)
        print(f"{name}: {len(data)} -> {len(out)}")
