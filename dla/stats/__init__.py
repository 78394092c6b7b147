"""Statistics: segmentation metrics with 95% CIs (``metrics``), residual bone and artifacts (``artifacts``), and
reader-study statistics (``reader``)."""
