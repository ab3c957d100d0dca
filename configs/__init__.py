"""Config files, loaded by path (``--config=configs/x.py:variant``)."""
