"""Labels: connected components (``components``), the paper's recipe (``recipe``), replayable edit operations
(``edit_ops``), the compressed label codec (``codec``) and training samples (``samples``)."""
