"""dcfs: a distributed read cache for object storage, mounted as a filesystem.

This package holds what the services share (bucket adapters, the block
cache, the hash ring, rpc and config helpers) and the ``dcfs`` command line.
Only :mod:`dcfs.cli` imports the services.
"""

__version__ = "0.1.0"
