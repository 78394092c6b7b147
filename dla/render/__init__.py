"""Rendering for the browser: 2-D slices, HU windows, overlays and PNG (``slices``), MIPs along an axis or at
any rotation (``mip``)."""
