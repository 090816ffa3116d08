"""Re-encodes an audio file as Opus in WebM or Ogg, as browsers record it (for the speech tests).

Run with the speech venv's Python (PyAV is in it): encode_opus.py SOURCE TARGET webm|ogg
"""

import sys

import av

source, target, container = sys.argv[1:]
with av.open(source) as inp, av.open(target, "w", format=container) as out:
    stream = out.add_stream("libopus", rate=48000, layout="mono")
    # Opus takes frames of a fixed size (20 ms at 48 kHz).
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000, frame_size=960)
    for frame in inp.decode(audio=0):
        for chunk in resampler.resample(frame):
            out.mux(stream.encode(chunk))
    for chunk in resampler.resample(None):
        out.mux(stream.encode(chunk))
    out.mux(stream.encode(None))
