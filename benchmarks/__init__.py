"""Rate-distortion and speed benchmarks for the vaez codec.

This package exists so the measurements behind every published number can be
rerun and imported: ``rd`` (rate-distortion sweeps against Pillow's JPEG, WebP
and AVIF, plus published anchors), ``speed`` (per-stage timings), ``metrics``
(PSNR and MS-SSIM) and ``bdrate`` (Bjøntegaard delta rate).  None of it is
needed to encode or decode images.
"""
