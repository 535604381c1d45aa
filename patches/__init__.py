"""The upstream patches (see README.md here), installed with uvq-int8 as uvq_int8.patches.

Data only: ``uvq_int8.patching`` reads the ``*.patch`` files in this folder.
"""
