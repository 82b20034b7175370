"""PySide6 widgets and workers; all computation lives in ``seg_app.core``."""
