"""Rosbags -> frames -> folder datasets, in the order the data flows.

reader (open, index, raw header stamps) -> topics (which ones to read) -> calibration (cameras,
extrinsic) -> sync (pairing by stamp) -> decode (messages -> arrays) -> frames (synced,
registered, metric frames: extraction and mtl-replay read these) -> extract (the folder dataset).
synth writes bags from the procedural world for tests and benchmarks.
"""
