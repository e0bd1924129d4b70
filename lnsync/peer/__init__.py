"""Talking to Lightning peers: the BOLT 8 transport (Noise_XK handshake, encrypted frames) that the
downloader dials with and the demo peer accepts with."""
