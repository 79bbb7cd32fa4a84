"""The transistor-level realisation of KirchhoffNets in open PDKs (docs/silicon.md).

``silicon.pdk`` locates the installed PDKs (model files are never copied into the repository).
This package may import ``models`` and ``export``; nothing in ``models`` imports it.
"""
