"""The desktop app: a Qt-free document (``session``) shown by PySide6 panels, controllers and workers; all computation lives in ``seg_app.core``."""
