"""Files in and out: images read into (C, H, W) arrays, PNGs written, weight files, and the output folder that
appears whole or not at all.  Imports ``base`` and ``compute``."""
