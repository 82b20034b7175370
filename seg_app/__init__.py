"""Tumour-segmentation workstation (research use only, not for clinical diagnosis)."""

__version__ = "0.1.0"

DISCLAIMER = "Research use only. Not for clinical diagnosis or treatment decisions."
